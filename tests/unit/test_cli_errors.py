"""Every command that opens the ledger answers a database URL it cannot use with one line, a
stable code and exit status 2: ``database_url_invalid`` for a text that is not a URL of SQLite
(a file) or PostgreSQL, ``database_unavailable`` for a database that does not answer. No
traceback, and nothing is created."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cbdc.cli import app
from cbdc.domain.errors import InvalidRequest
from cbdc.services.context import (
    ENV_LEDGER_ID,
    ENV_LEDGER_SIGNING_SEED,
    ENV_OFFLINE_ROOT_SEED,
    open_ledger,
)
from cbdc.storage import migrate
from cbdc.storage.engine import normalise_url

runner = CliRunner()
PLAN = str(Path(__file__).parents[2] / "examples" / "issuance-plan.toml")
COMMANDS = [
    ["audit"], ["reconcile"], ["db", "upgrade"], ["db", "current"], ["issue", "run", PLAN],
    ["apikey", "list"], ["apikey", "create", "central-bank"], ["simulate-setup"], ["serve"],
]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed again when the probe is


@pytest.mark.parametrize("url", ["foo://bar", "not a url", "sqlite://", "sqlite:///:memory:",
                                 "mysql://root@localhost/cbdc", "sqlite+aiosqlite:///x.db"])
@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_url_that_is_not_a_ledger_database_is_refused_by_code(
    command: list[str], url: str
) -> None:
    result = runner.invoke(app, [*command, "--database-url", url])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error [database_url_invalid] "), result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_database_that_does_not_answer_is_unavailable(
    command: list[str], tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-folder" / "ledger.sqlite3"
    not_a_database = tmp_path / "notes.sqlite3"
    not_a_database.write_text("not a database\n", encoding="utf-8")
    closed = _closed_port()
    for url in (f"sqlite:///{missing}", f"sqlite:///{not_a_database}",
                f"postgresql://cbdc@127.0.0.1:{closed}/cbdc",
                f"postgresql+psycopg2://cbdc@127.0.0.1:{closed}/cbdc"):  # psycopg 3 all the same
        result = runner.invoke(app, [*command, "--database-url", url])
        assert result.exit_code == 2, result.output
        assert result.output.startswith("error [database_unavailable] the ledger database is "
                                        "unavailable: "), result.output
    assert not missing.parent.exists()
    assert not_a_database.read_text(encoding="utf-8") == "not a database\n"


def test_the_simulation_refuses_such_urls_the_same_way(tmp_path: Path) -> None:
    out = tmp_path / "out"
    invalid = runner.invoke(app, ["simulate", "--out", str(out), "--database-url", "foo://bar"])
    assert (invalid.exit_code, invalid.output.split("]")[0]) == (2, "error [database_url_invalid")
    closed = f"postgresql://cbdc@127.0.0.1:{_closed_port()}/cbdc"
    down = runner.invoke(app, ["simulate", "--out", str(out), "--database-url", closed])
    assert (down.exit_code, down.output.split("]")[0]) == (2, "error [database_unavailable")


def test_plain_postgresql_urls_go_to_psycopg_3() -> None:
    assert normalise_url("postgresql://u:p@h:5/db") == "postgresql+psycopg://u:p@h:5/db"
    assert normalise_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_url("postgresql+pg8000://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_url("sqlite+pysqlite:///x.sqlite3") == "sqlite+pysqlite:///x.sqlite3"
    assert normalise_url("sqlite:///x.sqlite3") == "sqlite:///x.sqlite3"
    with pytest.raises(InvalidRequest) as refused:
        normalise_url("oracle://u@h/db")
    assert (refused.value.code, refused.value.extra) == (
        "database_url_invalid", {"field": "database_url"})


def test_an_unknown_revision_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    assert runner.invoke(app, ["db", "upgrade", "--database-url", url]).exit_code == 0
    for command in (["db", "upgrade", "no-such"], ["db", "downgrade", "no-such"],
                    ["db", "upgrade", "--revision", "@"], ["db", "downgrade", ""]):
        result = runner.invoke(app, [*command, "--database-url", url])
        assert result.exit_code == 2, result.output
        assert result.output.startswith("error [revision_invalid] "), result.output
    current = runner.invoke(app, ["db", "current", "--database-url", url])
    assert "(up to date)" in current.output


def test_a_port_out_of_range_is_a_usage_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    result = runner.invoke(app, ["serve", "--port", "65536", "--database-url", url])
    assert result.exit_code == 2 and "--port" in result.output


@pytest.mark.parametrize("seeds_set", [False, True])
def test_serve_warns_when_it_would_sign_with_the_public_test_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seeds_set: bool
) -> None:
    import uvicorn

    served: list[str] = []
    monkeypatch.setattr(uvicorn, "run", lambda target, **_: served.append(target))
    for name in (ENV_LEDGER_SIGNING_SEED, ENV_OFFLINE_ROOT_SEED):
        if seeds_set:
            monkeypatch.setenv(name, "ab" * 32)
        else:
            monkeypatch.delenv(name, raising=False)
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    assert runner.invoke(app, ["db", "upgrade", "--database-url", url]).exit_code == 0
    result = runner.invoke(app, ["serve", "--database-url", url])
    assert result.exit_code == 0, result.output
    assert served == ["api.app:create_app"]
    warnings = [line for line in result.output.splitlines() if line.startswith("warning ")]
    if seeds_set:
        assert warnings == []
    else:
        assert [line.split()[1] for line in warnings] == [ENV_LEDGER_SIGNING_SEED,
                                                          ENV_OFFLINE_ROOT_SEED]
        assert all(line.endswith("(docs/operations.md)") for line in warnings)  # one line each


@pytest.mark.parametrize(("name", "value"), [
    (ENV_LEDGER_SIGNING_SEED, "not hex at all"),
    (ENV_LEDGER_SIGNING_SEED, "ab" * 31),
    (ENV_OFFLINE_ROOT_SEED, "zz" * 32),
    (ENV_LEDGER_ID, "has a space"),
    (ENV_LEDGER_ID, "x" * 65),
])
def test_a_malformed_setting_is_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    assert runner.invoke(app, ["db", "upgrade", "--database-url", url]).exit_code == 0
    monkeypatch.setenv(name, value)
    for command in (["audit"], ["reconcile"], ["serve"]):
        result = runner.invoke(app, [*command, "--database-url", url])
        assert result.exit_code == 2, result.output
        assert result.output.startswith(f"error [setting_invalid] the setting {name} must be ")
        assert "Traceback" not in result.output


@pytest.mark.parametrize("command", [["audit"], ["reconcile"], ["db", "current"],
                                     ["db", "downgrade", "base"], ["serve"],
                                     ["issue", "run", PLAN], ["apikey", "list"]])
def test_a_command_that_needs_a_database_leaves_no_file_where_there_was_none(
    tmp_path: Path, command: list[str]
) -> None:
    database = tmp_path / "ledger.sqlite3"
    result = runner.invoke(app, [*command, "--database-url", f"sqlite:///{database}"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error [database_unavailable] the ledger database is "
                                    "unavailable: no file ")
    assert result.output.rstrip("\n").endswith("(`cbdc db upgrade` creates it)")
    assert result.output.count("\n") == 1  # one line, however long the path
    assert not database.exists()


def test_db_downgrade_says_where_the_schema_is(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    assert runner.invoke(app, ["db", "upgrade", "--database-url", url]).exit_code == 0
    result = runner.invoke(app, ["db", "downgrade", "base", "--database-url", url])
    assert result.exit_code == 0 and result.output.strip() == "schema at base (empty)"
    head = migrate.head_revision()  # db upgrade takes REVISION as db downgrade does
    result = runner.invoke(app, ["db", "upgrade", head, "--database-url", url])
    assert result.exit_code == 0 and result.output.strip() == f"schema at {head}"


def test_the_ledger_id_comes_from_its_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    assert runner.invoke(app, ["db", "upgrade", "--database-url", url]).exit_code == 0
    monkeypatch.delenv(ENV_LEDGER_ID, raising=False)
    contexts = [open_ledger(url)]
    monkeypatch.setenv(ENV_LEDGER_ID, "pilot.shenzhen-2026")
    contexts += [open_ledger(url), open_ledger(url, ledger_id="given")]  # an argument wins
    try:
        assert [context.ledger_id for context in contexts] == [
            "cbdc-local", "pilot.shenzhen-2026", "given"]
    finally:
        for context in contexts:
            context.dispose()


def test_a_sqlite_uri_url_names_its_file(tmp_path: Path) -> None:
    """``sqlite:///file:PATH?...&uri=true`` opens PATH (the missing-file check strips the URI
    form; it once took ``file:PATH`` for the path and refused a database that exists)."""
    path = tmp_path / "uri.sqlite3"
    create = f"sqlite:///file:{path}?mode=rwc&uri=true"
    assert runner.invoke(app, ["db", "upgrade", "--database-url", create]).exit_code == 0
    assert path.is_file()
    result = runner.invoke(app, ["reconcile", "--database-url",
                                 f"sqlite:///file:{path}?mode=rw&uri=true"])
    assert result.exit_code == 0, result.output
    missing = runner.invoke(app, ["reconcile", "--database-url",
                                  f"sqlite:///file:{tmp_path / 'none.sqlite3'}?mode=rw&uri=true"])
    assert missing.exit_code == 2 and "no file " in missing.output


def test_simulate_setup_checks_the_settings_before_it_creates_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_LEDGER_ID, "not an id")
    database = tmp_path / "setup.sqlite3"
    result = runner.invoke(app, ["simulate-setup", "--database-url", f"sqlite:///{database}"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error [setting_invalid] the setting {ENV_LEDGER_ID} ")
    assert not database.exists()
