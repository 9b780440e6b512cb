"""Applying migrations and refusing to run on a schema that is behind the code."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Engine

from cbdc.domain.errors import InvalidRequest, SchemaOutOfDate

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = database_url
    return config


def head_revision() -> str:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    head = script.get_current_head()
    assert head is not None, "migrations have no head"
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(database_url: str, revision: str = "head") -> None:
    """Migrate up to ``revision``; one that is not ours is ``revision_invalid`` and changes
    nothing (one at or below the current revision changes nothing either)."""
    with _revision_checked(revision):
        command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    """Revert down to ``revision`` (``base``: everything); see :func:`upgrade`."""
    with _revision_checked(revision):
        command.downgrade(alembic_config(database_url), revision)


@contextmanager
def _revision_checked(revision: str) -> Iterator[None]:
    """Alembic's refusals of a revision as ``revision_invalid``. Texts it cannot even parse
    (``""``, ``"@"``) fail its own assertions, so they are looked up first; a relative one
    (``-1``) resolves only against the database, in the command itself."""
    try:
        ScriptDirectory.from_config(alembic_config("sqlite://")).get_revisions(revision)
    except AssertionError:
        raise _invalid_revision(f"not a revision: {revision!r}") from None
    except CommandError:
        pass
    try:
        yield
    except CommandError as error:
        raise _invalid_revision(str(error)) from None


def _invalid_revision(detail: str) -> InvalidRequest:
    return InvalidRequest(detail, code="revision_invalid", field="revision")


def ensure_current(engine: Engine) -> None:
    """Raise SchemaOutOfDate unless the database is at the code's head revision."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise SchemaOutOfDate(
            f"database schema is at {current or 'nothing'}, the code needs {head}: "
            "run `cbdc db upgrade`"
        )
