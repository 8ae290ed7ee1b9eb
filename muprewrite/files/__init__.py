"""Reading source files byte-faithfully and writing outputs safely.

``read_source`` decodes a Python file the way Python does (BOM, PEP 263 cookie) without
translating line endings, and ``SourceText.encode`` turns edited text back into bytes in the
same encoding. ``write_file`` is the one place the package writes a file; ``check_output``
and ``check_distinct`` let a command refuse a bad output before it computes anything.
"""

from .source_text import SourceError, SourceText, read_source, split_lines
from .write import OutputError, check_distinct, check_output, write_file

__all__ = ["OutputError", "SourceError", "SourceText", "check_distinct", "check_output",
           "read_source", "split_lines", "write_file"]
