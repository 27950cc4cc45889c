"""The command line: click lives here and nowhere else in kerascomp.

Every command is a thin layer over a library function; technique commands are
generated from each registered technique's config fields.
"""

from kerascomp.cli.commands import cli, main

__all__ = ["cli", "main"]
