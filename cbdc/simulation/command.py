"""`cbdc simulate`: the command, kept out of ``cbdc/cli.py`` (which only registers it).

Shows a Rich progress bar per phase, then a summary table, the files written and the verdict of
the reconciliation and the audit; exits 1 when an invariant fails, 2 on a domain error.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from cbdc.domain.errors import InvalidRequest
from cbdc.domain.money import format_yuan
from cbdc.simulation.ports import LedgerPort
from cbdc.simulation.runner import (
    Simulation,
    api_port,
    fresh_sqlite_url,
    in_process_port,
    parse_operator_keys,
    simulate,
)
from cbdc.simulation.scenario import default_scenario, load_scenario
from cbdc.terminal import console, domain_errors, errors


@domain_errors
def simulate_command(
    scenario_path: Annotated[
        Path | None,
        typer.Argument(metavar="[SCENARIO.toml]",
                       help="Scenario file (default: the built-in pilot week, "
                            "examples/scenario.toml)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of every random draw and wallet key.")] = 42,
    out: Annotated[Path, typer.Option(help="Folder for report.html, charts, metrics.json.")] = (
        Path("out/simulation")
    ),
    scale: Annotated[int, typer.Option(help="Multiply wallets, merchants and payments.")] = 1,
    database_url: Annotated[
        str | None,
        typer.Option("--database-url",
                     help="An empty, migrated (or new) ledger database. Default: a fresh SQLite "
                          "file OUT/ledger.sqlite3. $CBDC_DATABASE_URL is deliberately ignored."),
    ] = None,
    api: Annotated[
        str | None,
        typer.Option("--api", help="Drive a running `cbdc serve` at this URL (http://HOST:PORT) "
                                   "over HTTP instead."),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", envvar="CBDC_API_KEY",
                     help="With --api: the central bank's API key."),
    ] = None,
    operator_keys: Annotated[
        list[str] | None,
        typer.Option("--operator-key", envvar="CBDC_SIM_OPERATOR_KEYS",
                     help="With --api: CODE=KEY, one per operator of the scenario (keys from "
                          "`cbdc apikey create CODE` on the server; the environment variable "
                          "takes them separated by spaces)."),
    ] = None,
) -> None:
    """Simulate a pilot: issuance, wallets, merchant and personal payments, cheats; report."""
    scenario = load_scenario(scenario_path) if scenario_path else default_scenario()
    scenario = scenario.scaled(scale)
    port: LedgerPort
    if api is not None:
        if api_key is None or database_url is not None:
            raise InvalidRequest("--api needs --api-key (the central bank's) and no "
                                 "--database-url (the server has its own)",
                                 code="api_options_invalid")
        scenario, port = api_port(scenario, api, api_key,
                                  parse_operator_keys(operator_keys or []))
    else:
        port = in_process_port(scenario, seed, database_url or fresh_sqlite_url(out))
    with _progress() as progress:
        tasks: dict[str, TaskID] = {}

        def advance(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = progress.add_task(phase, total=total)
            progress.update(tasks[phase], completed=done, total=total)

        simulation = simulate(scenario, seed, port=port, out=out, progress=advance)
    _print(simulation)
    if not simulation.result.ok:
        raise typer.Exit(1)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=errors, disable=not sys.stderr.isatty(),
    )


def _print(simulation: Simulation) -> None:
    result = simulation.result
    metrics = result.metrics
    table = Table(title=f"Simulation {result.scenario.name}, seed {result.seed}")
    table.add_column("payment kind")
    for column in ("attempted", "settled", "volume (CNY)", "not run"):
        table.add_column(column, justify="right")
    for kind in sorted(set(metrics.attempts_by_kind) | set(metrics.not_run)):
        tally = metrics.by_kind.get(kind)
        table.add_row(kind, f"{metrics.attempts_by_kind.get(kind, 0):,}",
                      f"{tally.count if tally else 0:,}",
                      format_yuan(tally.volume_fen if tally else 0),
                      f"{metrics.not_run.get(kind, 0):,}")
    console.print(table)
    cheats = Table(title="Cheats injected")
    for column in ("kind", "refused", "detected", "accepted"):
        cheats.add_column(column, justify="right" if column != "kind" else "left")
    for kind, row in metrics.injections.by_kind().items():
        cheats.add_row(kind, str(row["refused"]), str(row["detected"]), str(row["accepted"]))
    console.print(cheats)
    if not result.offline_run:
        console.print("offline payments: [yellow]not run[/] (their slots are counted as not run)")
    per_second = metrics.settled_count / result.wall_seconds if result.wall_seconds else 0.0
    in_ledger = sum(metrics.ledger_seconds.values())
    console.print(f"wall time {result.wall_seconds:.1f} s ({in_ledger:.1f} s of it in the "
                  f"ledger's calls); settled {metrics.settled_count:,} payments "
                  f"({per_second:,.0f} per second of wall time)")
    if simulation.written is not None:
        console.print(f"report   {simulation.written.html}")
        console.print(f"metrics  {simulation.written.metrics}")
        console.print(f"charts   {simulation.written.html.parent}/*.png")
    console.print(f"final state hash {result.final_state_hash}")
    for name, ok in result.invariants.items():
        console.print(f"  {'[green]pass[/]' if ok else '[bold red]FAIL[/]'}  {name}")
    console.print("[bold green]ALL INVARIANTS HOLD[/]" if result.ok
                  else "[bold red]INVARIANTS FAILED[/]")
