"""What the command line prints to: its two consoles, and its one form of an error."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape

from cbdc.domain.errors import CbdcError

#: Tables and results; as wide as the terminal, or 132 columns into a pipe or a file.
console = Console(width=None if sys.stdout.isatty() else 132)
#: Progress, notices and errors.
errors = Console(stderr=True)


def print_error(error: CbdcError) -> None:
    """One line on stderr: ``error [code] detail``."""
    # escape(): Rich reads "[plan_invalid]" (or "[[orders]]" in a detail) as markup and would
    # silently drop the stable code the caller switches on.
    errors.print(f"[bold red]error[/] {escape(f'[{error.code}]')} {escape(error.detail)}",
                 highlight=False)
