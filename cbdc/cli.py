"""The `cbdc` command line: a thin shell over the services.

Every command takes ``--database-url`` (default ``$CBDC_DATABASE_URL``, else ``cbdc.sqlite3`` in
the working directory). Domain errors print their stable code and exit 2; an audit with findings
or a run with failed orders exits 1.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.engine import make_url

from cbdc.domain.errors import DatabaseUnavailable, NotFound
from cbdc.domain.money import format_yuan
from cbdc.services import apikeys, issuance
from cbdc.services.audit import AuditReport, run_audit
from cbdc.services.context import (
    ENV_LEDGER_SIGNING_SEED,
    ENV_OFFLINE_ROOT_SEED,
    LedgerContext,
    check_settings,
    open_ledger,
)
from cbdc.services.issuance_run import RunReport, execute_plan, load_plan
from cbdc.services.reconcile import SupplyReport, supply_report
from cbdc.simulation.scenario import default_scenario, load_scenario
from cbdc.storage import migrate
from cbdc.storage.engine import (
    ENV_DATABASE_URL,
    database_url_from_env,
    make_engine,
    normalise_url,
)
from cbdc.terminal import console, domain_errors, errors

app = typer.Typer(
    help="cbdc: a two-tier central bank digital currency ledger.", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
issue_app = typer.Typer(help="Central-bank issuance.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(issue_app, name="issue")


DatabaseUrl = Annotated[
    str | None,
    typer.Option("--database-url", envvar="CBDC_DATABASE_URL",
                 help="SQLAlchemy URL; default a SQLite file cbdc.sqlite3 here."),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]



def _url(database_url: str | None) -> str:
    return normalise_url(database_url or database_url_from_env())


def _existing(url: str) -> str:
    """``url``, for a command that needs a migrated database: a SQLite file that does not exist
    is database_unavailable here, rather than created empty and then found out of date."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return url
    path = parsed.database or ""
    if parsed.query.get("uri") == "true":  # sqlite:///file:NAME?mode=...&uri=true
        path = path.removeprefix("file:").partition("?")[0]
    if not Path(path).is_file():
        raise DatabaseUnavailable(f"the ledger database is unavailable: no file {path} "
                                  "(`cbdc db upgrade` creates it)")
    return url


def _open(database_url: str | None) -> LedgerContext:
    return open_ledger(_existing(_url(database_url)))


@db_app.command("upgrade")
@domain_errors
def db_upgrade(
    revision: Annotated[str | None, typer.Argument(help="Default: the newest.")] = None,
    database_url: DatabaseUrl = None,
    revision_option: Annotated[str | None, typer.Option("--revision", hidden=True)] = None,
) -> None:
    """Apply migrations up to REVISION (default: the newest), as db downgrade takes it."""
    url = _url(database_url)
    migrate.upgrade(url, revision or revision_option or "head")
    engine = make_engine(url)
    try:
        console.print(f"schema at [bold]{migrate.current_revision(engine)}[/]")
    finally:
        engine.dispose()


@db_app.command("downgrade")
@domain_errors
def db_downgrade(revision: str, database_url: DatabaseUrl = None) -> None:
    """Revert migrations down to REVISION ('base' removes everything)."""
    url = _existing(_url(database_url))
    migrate.downgrade(url, revision)
    engine = make_engine(url)
    try:
        current = migrate.current_revision(engine)
    finally:
        engine.dispose()
    console.print(f"schema at [bold]{current or 'base (empty)'}[/]")


@db_app.command("current")
@domain_errors
def db_current(database_url: DatabaseUrl = None) -> None:
    """Show the schema revision of the database and of the code."""
    engine = make_engine(_existing(_url(database_url)))
    try:
        current = migrate.current_revision(engine)
    finally:
        engine.dispose()
    head = migrate.head_revision()
    state = "up to date" if current == head else "BEHIND: run `cbdc db upgrade`"
    console.print(f"database: {current or '(empty)'}  code: {head}  ({state})")


@issue_app.command("run")
@domain_errors
def issue_run(plan_path: Path, database_url: DatabaseUrl = None, as_json: AsJson = False) -> None:
    """Execute an issuance plan (TOML); safe to re-run after any interruption."""
    plan = load_plan(plan_path)
    context = _open(database_url)
    try:
        with _progress(quiet=as_json) as progress:
            task = progress.add_task(f"run {plan.run_id}", total=len(plan.orders))
            report = execute_plan(context, plan, on_order=lambda _: progress.advance(task))
    finally:
        context.dispose()
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        _print_run(report)
    if not report.complete:
        raise typer.Exit(1)


@app.command("audit")
@domain_errors
def audit(database_url: DatabaseUrl = None, as_json: AsJson = False) -> None:
    """Re-check the whole ledger from its journal; exit 1 naming anything wrong."""
    context = _open(database_url)
    try:
        with _progress(quiet=as_json) as progress:
            task = progress.add_task("auditing journal", total=None)
            report = run_audit(context, progress=lambda n: progress.advance(task, n))
    finally:
        context.dispose()
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        _print_audit(report)
    if not report.ok:
        raise typer.Exit(1)


@app.command("reconcile")
@domain_errors
def reconcile(
    database_url: DatabaseUrl = None,
    operator: Annotated[str | None, typer.Option(
        help="Only this operator's figures (no verdict: only the whole ledger balances).",
    )] = None,
    as_json: AsJson = False,
) -> None:
    """Print the supply report per operator and in total; exit 1 if it does not balance."""
    context = _open(database_url)
    try:
        report = supply_report(context, operator_code=operator)
    finally:
        context.dispose()
    if operator is not None:
        # Payments between operators' wallets move holdings from one operator to another, so
        # one operator's holdings need not equal what it was issued: no verdict here.
        if not report.operators:
            raise NotFound(f"no operator {operator!r}", code="operator_not_found")
        if as_json:
            print(json.dumps(report.operators[0].as_dict(), indent=2))
        else:
            print_supply(report, verdict=False)
        return
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print_supply(report)
    if not report.balanced:
        raise typer.Exit(1)


def _progress(*, quiet: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=errors, disable=quiet or not sys.stderr.isatty(), transient=True,
    )


def _cny(amount_fen: int) -> str:
    return format_yuan(amount_fen)


def _print_run(report: RunReport) -> None:
    table = Table(title=f"Issuance run {report.run_id}", show_footer=True)
    table.add_column("operator", footer="total")
    table.add_column("issued (CNY)", justify="right", footer=_cny(report.issued_fen))
    for code, amount in sorted(report.issued_by_operator.items()):
        table.add_row(escape(code), _cny(amount))
    console.print(table)
    zones = Table(title="by pilot zone")
    zones.add_column("zone")
    zones.add_column("issued (CNY)", justify="right")
    for zone, amount in sorted(report.issued_by_zone.items()):
        zones.add_row(escape(zone) or "(none)", _cny(amount))
    console.print(zones)
    console.print(
        f"orders: {report.orders_planned} planned, {report.orders_issued_now} issued now, "
        f"{report.orders_already_done} already done, {len(report.failures)} failed"
    )
    for order, error in report.failures:
        errors.print(f"[red]order {order.number} ({escape(order.operator)}, "
                     f"{_cny(order.amount_fen)} CNY): {escape(f'[{error.code}]')} "
                     f"{escape(error.detail)}", highlight=False)


def print_supply(report: SupplyReport, *, verdict: bool = True) -> None:
    columns = ("quota", "issued", "redeemed", "outstanding", "reserve", "float", "wallets",
               "escrow", "holdings")
    table = Table(title="e-CNY supply by operator (CNY)")
    table.add_column("operator")
    for column in columns:
        table.add_column(column, justify="right")
    for op in report.operators:
        row: dict[str, Any] = op.as_dict()
        table.add_row(op.code, *(_cny(row[f"{column}_fen"]) for column in columns))
    console.print(table)
    if not verdict:
        console.print("one operator's figures: payments between operators move holdings, so "
                      "only the whole ledger balances (run without --operator for the verdict)")
        return
    balanced = "[bold green]BALANCED[/]" if report.balanced else "[bold red]NOT BALANCED[/]"
    console.print(
        f"e-CNY outstanding {_cny(report.outstanding_fen)} = holdings "
        f"{_cny(report.holdings_fen)}; central-bank liability "
        f"{_cny(report.central_bank_liability_fen)} = reserves {_cny(report.reserves_fen)} + "
        f"e-CNY {_cny(report.holdings_fen)}: {balanced}"
    )


def _print_audit(report: AuditReport) -> None:
    console.print(
        f"audited {report.entries_checked:,} journal entries and {report.accounts_checked:,} "
        f"accounts; e-CNY outstanding {_cny(report.ecny_outstanding_fen)}, holdings "
        f"{_cny(report.holdings_fen)}"
    )
    if report.ok:
        console.print("[bold green]AUDIT PASSED[/]: chain intact, every entry balanced, "
                      "every balance equal to its postings, supply conserved")
        return
    table = Table(title=f"AUDIT FAILED: {len(report.findings)} finding(s)", style="red")
    for column in ("code", "where", "amount (fen)", "detail"):
        table.add_column(column)
    for finding in report.findings:
        amount = "" if finding.amount_fen is None else str(finding.amount_fen)
        table.add_row(finding.code, escape(finding.subject), amount, escape(finding.detail))
    console.print(table)


# `cbdc simulate` lives in its own module (it is the biggest command); registered here.
from cbdc.simulation.command import simulate_command  # noqa: E402

app.command("simulate")(simulate_command)

# The HTTP API's commands (issue 5), kept together so they merge cleanly.
apikey_app = typer.Typer(help="API keys of institutions for the HTTP API.", no_args_is_help=True)
app.add_typer(apikey_app, name="apikey")


@apikey_app.command("create")
@domain_errors
def apikey_create(code: str, database_url: DatabaseUrl = None) -> None:
    """Create an API key for CODE ('central-bank' or an operator's code); it is printed once."""
    context = _open(database_url)
    try:
        record, key = apikeys.create_api_key(context, code)
    finally:
        context.dispose()
    errors.print(f"API key {record.prefix}... for {record.institution_code} ({record.role}); "
                 "store it now, it is not shown again:", highlight=False)
    print(key)


@apikey_app.command("list")
@domain_errors
def apikey_list(database_url: DatabaseUrl = None) -> None:
    """List API keys (display prefixes only)."""
    context = _open(database_url)
    try:
        records = apikeys.list_api_keys(context)
    finally:
        context.dispose()
    table = Table(title="API keys")
    for column in ("prefix", "institution", "role", "created", "revoked"):
        table.add_column(column)
    for record in records:
        table.add_row(record.prefix, record.institution_code, record.role,
                      str(record.created_at), str(record.revoked_at or ""))
    console.print(table)


@apikey_app.command("revoke")
@domain_errors
def apikey_revoke(
    key: Annotated[str, typer.Argument(
        metavar="KEY_OR_PREFIX", help="The key, or its display prefix as create and list print "
                                      "it ('...' may be left on).")],
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke an API key, named by the key or by its display prefix."""
    context = _open(database_url)
    try:
        count = apikeys.revoke_api_key(context, key)
    finally:
        context.dispose()
    console.print(f"revoked {count} key(s)")


@app.command("simulate-setup")
@domain_errors
def simulate_setup(
    scenario_path: Annotated[
        Path | None,
        typer.Argument(metavar="[SCENARIO.toml]",
                       help="The scenario to run (default: the built-in pilot week)."),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Prepare a server's database for `cbdc simulate --api`; print its API keys.

    Migrates the database, registers the scenario's operators, and creates the central bank's
    API key and one for each operator. The keys are printed as shell exports, so that
    `eval "$(cbdc simulate-setup ...)"` hands them to `cbdc simulate --api URL`."""
    url = _url(database_url)
    scenario = load_scenario(scenario_path) if scenario_path else default_scenario()
    check_settings()  # before the database is created
    migrate.upgrade(url)
    context = open_ledger(url)
    try:
        for spec in scenario.operators:  # all of them first: a refusal leaves no key unseen
            issuance.create_operator(context, spec.code, spec.name)
        pairs = [f"{spec.code}={apikeys.create_api_key(context, spec.code)[1]}"
                 for spec in scenario.operators]
        _, central_bank_key = apikeys.create_api_key(context, "central-bank")
    finally:
        context.dispose()
    errors.print(f"{len(pairs)} operators registered; API keys for the central bank and each "
                 "operator (store them now, they are not shown again):", highlight=False)
    print(f"export CBDC_API_KEY={shlex.quote(central_bank_key)}")
    print(f"export CBDC_SIM_OPERATOR_KEYS={shlex.quote(' '.join(pairs))}")


@app.command("serve")
@domain_errors
def serve(
    database_url: DatabaseUrl = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65_535,
                                      help="Port to listen on (0: any free port).")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
) -> None:
    """Serve the HTTP API with uvicorn (OpenAPI at /docs)."""
    import uvicorn

    url = _url(database_url)
    _open(url).dispose()  # refuse a schema that is behind, before any worker starts
    for name, what in ((ENV_LEDGER_SIGNING_SEED, "receipts are signed"),
                       (ENV_OFFLINE_ROOT_SEED, "offline devices are certified")):
        if not os.environ.get(name):
            errors.print(f"[bold yellow]warning[/] {name} is not set: {what} with the public "
                         "test key, with which anyone can sign; never serve real money so "
                         "(docs/operations.md)", highlight=False)
    os.environ[ENV_DATABASE_URL] = url  # each worker's app factory opens it
    uvicorn.run("api.app:create_app", factory=True, host=host, port=port, workers=workers)
