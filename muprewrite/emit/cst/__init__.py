"""Shared libcst helpers of emission, importing nothing else from ``emit`` but its error.

``source.py`` (a parsed file of the user's: nodes with positions and parents, the methods and
functions a scan visits), ``trace.py`` (a name followed back through a function's assignments
to the product it holds), ``literals.py`` (names and text from the user's model written into
emitted code as inert literals and comments).
"""
