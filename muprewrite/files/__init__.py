"""Reading source files byte-faithfully and writing outputs safely.

``read_source`` decodes a Python file the way Python does (BOM, PEP 263 cookie) without
translating line endings, and ``SourceText.encode`` turns edited text back into bytes in the
same encoding. ``write_file`` (one file) and ``write_files`` (several, all or none) are the
only places the package writes; ``check_output``, ``check_folder`` and ``check_distinct`` let
a command refuse a bad output before it computes anything.
"""

from .source_text import SourceError, SourceText, read_source, split_lines
from .write import OutputError, check_distinct, check_folder, check_output, write_file, write_files

__all__ = ["OutputError", "SourceError", "SourceText", "check_distinct", "check_folder",
           "check_output", "read_source", "split_lines", "write_file", "write_files"]
