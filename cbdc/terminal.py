"""What the command line prints to (its two consoles), its one form of an error, and the
decorator that turns a command's domain errors into that form with exit status 2."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from sqlalchemy.exc import DBAPIError

from cbdc.domain.errors import CbdcError
from cbdc.storage.engine import database_unavailable

#: Tables and results; as wide as the terminal, or 132 columns into a pipe or a file.
console = Console(width=None if sys.stdout.isatty() else 132)
#: Progress, notices and errors: each printed line stays one line, however narrow the terminal
#: (logs and scripts read them; Rich would otherwise wrap them at 80 columns in a pipe).
errors = Console(stderr=True, soft_wrap=True)


def print_error(error: CbdcError) -> None:
    """One line on stderr: ``error [code] detail``."""
    # escape(): Rich reads "[plan_invalid]" (or "[[orders]]" in a detail) as markup and would
    # silently drop the stable code the caller switches on.
    errors.print(f"[bold red]error[/] {escape(f'[{error.code}]')} {escape(error.detail)}",
                 highlight=False)


P = ParamSpec("P")
R = TypeVar("R")


def domain_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn a domain error into one line with its stable code and exit status 2."""

    @wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except DBAPIError as error:
            failed = database_unavailable(error)
            if failed is None:
                raise
            print_error(failed)
            raise typer.Exit(2) from failed
        except CbdcError as error:
            print_error(error)
            raise typer.Exit(2) from error

    return wrapper
