"""Issuance runs: the example plan, a run killed with SIGKILL and started again, invalid plans,
and orders over quota. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sysconfig
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from cbdc.cli import app
from cbdc.domain.errors import InvalidPlan, InvalidRequest
from cbdc.domain.money import yuan
from cbdc.services import issuance
from cbdc.services.audit import run_audit
from cbdc.services.context import LedgerContext
from cbdc.services.issuance_run import execute_plan, load_plan
from cbdc.storage.tables import institutions, journal_entries, postings

EXAMPLE_PLAN = Path(__file__).resolve().parents[2] / "examples" / "issuance-plan.toml"
KILLED_RUN_ORDERS = 400


def journal_count(ledger: LedgerContext, entry_id_prefix: str = "") -> int:
    with ledger.read() as connection:
        return connection.execute(
            select(func.count()).select_from(journal_entries)
            .where(journal_entries.c.entry_id.startswith(entry_id_prefix))
        ).scalar_one()


def issued_by_entry(ledger: LedgerContext, run_id: str) -> dict[str, int]:
    """entry id -> amount credited, for every issue entry of the run."""
    with ledger.read() as connection:
        rows = connection.execute(
            select(journal_entries.c.entry_id, postings.c.amount_fen)
            .join(postings, postings.c.entry_seq == journal_entries.c.seq)
            .where(journal_entries.c.kind == "issue", postings.c.amount_fen > 0,
                   journal_entries.c.entry_id.startswith(f"run:{run_id}:order:"))
        ).all()
    found: dict[str, int] = {}
    for entry_id, amount in rows:
        assert entry_id not in found, f"{entry_id} credited twice"
        found[entry_id] = amount
    return found


def run_cli(*args: str) -> tuple[int, Any, str]:
    result = CliRunner().invoke(app, list(args))
    payload = None
    if "--json" in args and result.exit_code in (0, 1):
        payload = json.loads(result.stdout)
    return result.exit_code, payload, result.output


def test_example_plan_runs_and_reruns_without_issuing_twice(
    ledger: LedgerContext, database_url: str
) -> None:
    plan = load_plan(EXAMPLE_PLAN)
    assert plan.run_id == "pilot-2026-q1"
    assert plan.total_fen == yuan(850_000)

    first = execute_plan(ledger, plan)
    assert first.complete
    assert (first.orders_planned, first.orders_issued_now, first.orders_already_done) == (5, 5, 0)
    assert dict(first.issued_by_operator) == {"ICBC": yuan(550_000), "BOC": yuan(300_000)}
    assert dict(first.issued_by_zone) == {
        "shenzhen": yuan(400_000), "suzhou": yuan(200_000), "xiongan": yuan(250_000),
    }
    entries_after_first = journal_count(ledger)
    assert entries_after_first == 2 + 5  # two reserve deposits, five orders

    again = execute_plan(ledger, plan)
    assert (again.orders_issued_now, again.orders_already_done) == (0, 5)
    assert again.issued_fen == first.issued_fen == yuan(850_000)
    assert journal_count(ledger) == entries_after_first

    exit_code, report, _ = run_cli("issue", "run", str(EXAMPLE_PLAN), "--database-url",
                                   database_url, "--json")
    assert exit_code == 0
    assert (report["orders_issued_now"], report["orders_already_done"]) == (0, 5)
    assert journal_count(ledger) == entries_after_first
    assert sum(issued_by_entry(ledger, plan.run_id).values()) == yuan(850_000)
    assert run_audit(ledger).ok


def test_reconcile_gives_a_verdict_for_the_whole_ledger_and_figures_for_one_operator(
    ledger: LedgerContext, database_url: str
) -> None:
    """Issuing to two operators balances the ledger; one operator's figures come without a
    verdict (payments between operators move holdings between them, so only the whole ledger
    balances; it once said NOT BALANCED for any operator of several), and an unknown operator
    is operator_not_found."""
    execute_plan(ledger, load_plan(EXAMPLE_PLAN))
    exit_code, whole, output = run_cli("reconcile", "--database-url", database_url, "--json")
    assert exit_code == 0 and whole["total"]["balanced"] is True
    exit_code, _, output = run_cli("reconcile", "--database-url", database_url)
    assert exit_code == 0 and "BALANCED" in output and "NOT BALANCED" not in output

    exit_code, one, _ = run_cli("reconcile", "--operator", "BOC", "--database-url",
                                database_url, "--json")
    assert exit_code == 0
    assert one == next(op for op in whole["operators"] if op["code"] == "BOC")
    assert one["issued_fen"] == yuan(300_000)
    exit_code, _, output = run_cli("reconcile", "--operator", "BOC", "--database-url",
                                   database_url)
    assert exit_code == 0 and "BALANCED" not in output and "BOC" in output
    assert "only the whole ledger balances" in output
    exit_code, _, output = run_cli("reconcile", "--operator", "NOPE", "--database-url",
                                   database_url)
    assert exit_code == 2 and output.startswith("error [operator_not_found] ")


def write_big_plan(path: Path, run_id: str) -> int:
    """KILLED_RUN_ORDERS orders over two operators; returns the planned total in fen."""
    lines = [
        f'run_id = "{run_id}"',
        '[[operators]]\ncode = "ICBC"\nname = "ICBC"\nquota = "5000000.00"\nreserve = "5000000.00"',
        '[[operators]]\ncode = "BOC"\nname = "BOC"\nquota = "5000000.00"\nreserve = "5000000.00"',
    ]
    total = 0
    for number in range(1, KILLED_RUN_ORDERS + 1):
        amount_fen = (number % 9 + 1) * 10_000 + number  # 100.01 to 900.99 CNY, all different
        total += amount_fen
        operator = "ICBC" if number % 3 else "BOC"
        lines.append(f'[[orders]]\noperator = "{operator}"\nzone = "zone-{number % 5}"\n'
                     f'amount = "{amount_fen // 100}.{amount_fen % 100:02d}"')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return total


def cbdc_command() -> str:
    """The installed console script (``pip install -e .`` puts it next to the interpreter)."""
    script = Path(sysconfig.get_path("scripts")) / "cbdc"
    assert script.exists(), f"console script missing at {script}: pip install -e '.[test]'"
    return str(script)


def test_run_killed_with_sigkill_and_rerun_issues_the_plan_exactly(
    ledger: LedgerContext, database_url: str, tmp_path: Path
) -> None:
    run_id = "kill-9"
    plan_path = tmp_path / "big-plan.toml"
    planned_total = write_big_plan(plan_path, run_id)
    plan = load_plan(plan_path)
    assert plan.total_fen == planned_total
    command = [cbdc_command(), "issue", "run", str(plan_path), "--database-url", database_url,
               "--json"]
    prefix = f"run:{run_id}:order:"

    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "CBDC_DATABASE_URL": ""})
    deadline = time.monotonic() + 60
    done_at_kill = 0
    try:
        while done_at_kill < 20:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the run never got going"
            time.sleep(0.005)
            done_at_kill = journal_count(ledger, prefix)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.communicate()
    assert process.returncode == -signal.SIGKILL

    committed = journal_count(ledger, prefix)
    assert 20 <= committed < KILLED_RUN_ORDERS, "killed part-way"

    finished = subprocess.run(command, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "CBDC_DATABASE_URL": ""})
    assert finished.returncode == 0, finished.stderr
    report = json.loads(finished.stdout)
    assert report["failures"] == []
    assert report["orders_already_done"] == committed
    assert report["orders_issued_now"] == KILLED_RUN_ORDERS - committed
    assert report["issued_fen"] == planned_total

    issued = issued_by_entry(ledger, run_id)
    assert issued == {order.entry_id(run_id): order.amount_fen for order in plan.orders}
    assert sum(issued.values()) == planned_total
    with ledger.read() as connection:
        counters = connection.execute(
            select(func.sum(institutions.c.issued_fen)).where(institutions.c.kind == "operator")
        ).scalar_one()
    assert counters == planned_total
    report_after = run_audit(ledger)
    assert report_after.ok, report_after.findings
    assert report_after.ecny_outstanding_fen == planned_total


VALID_HEADER = 'run_id = "r1"\n'
ONE_OPERATOR = '[[operators]]\ncode = "ICBC"\nname = "ICBC"\nquota = "100.00"\n'


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('run_id = "r1\n[[orders]]\n', "not valid TOML"),
        ('[[orders]]\noperator = "ICBC"\namount = "1.00"\n', "run_id"),
        ('run_id = ""\n[[orders]]\noperator = "ICBC"\namount = "1.00"\n', "run_id"),
        ('run_id = 7\n[[orders]]\noperator = "ICBC"\namount = "1.00"\n', "run_id"),
        (VALID_HEADER + '[[orders]]\noperator = "ICBC"\namount = 12.5\n', "quoted yuan string"),
        (VALID_HEADER + '[[orders]]\noperator = "ICBC"\namount_fen = 12.5\n', "integer"),
        (VALID_HEADER + '[[orders]]\noperator = "ICBC"\namount = "1.234"\n', "two decimals"),
        (VALID_HEADER + '[[orders]]\noperator = "ICBC"\namount = "-1.00"\n', "two decimals"),
        (VALID_HEADER + '[[orders]]\noperator = "ICBC"\namount_fen = 0\n', "positive"),
        (VALID_HEADER + '[[orders]]\noperator = "ICBC"\n', "amount is required"),
        (VALID_HEADER + '[[orders]]\noperator = "ICBC"\namount = "1.00"\namount_fen = 100\n',
         "not both"),
        (VALID_HEADER + ONE_OPERATOR, "no [[orders]]"),
        (VALID_HEADER + 'orders = "all of it"\n', "array of tables"),
        (VALID_HEADER + '[[operators]]\ncode = "ICBC"\nname = "ICBC"\nquota = 1.5\n'
         '[[orders]]\noperator = "ICBC"\namount = "1.00"\n', "quoted yuan string"),
        (VALID_HEADER + '[[operators]]\ncode = "x y"\nname = "X"\n'
         '[[orders]]\noperator = "x y"\namount = "1.00"\n', "operator code"),
        (VALID_HEADER + '[[operators]]\ncode = "ICBC"\nname = "ICBC\\nHead Office"\n'
         '[[orders]]\noperator = "ICBC"\namount = "1.00"\n', "contains U+000A"),
        (VALID_HEADER + '[[operators]]\ncode = "ICBC"\nname = "ICBC \\u202eevil"\n'
         '[[orders]]\noperator = "ICBC"\namount = "1.00"\n', "contains U+202E"),
        (VALID_HEADER + '[[operators]]\ncode = "ICBC"\nname = ""\n'
         '[[orders]]\noperator = "ICBC"\namount = "1.00"\n', "operator name must be 1-200"),
        (VALID_HEADER + 'runid = "r2"\n[[orders]]\noperator = "ICBC"\namount = "1.00"\n',
         "plan: unknown key 'runid'"),
        (VALID_HEADER + '[[operators]]\ncode = "ICBC"\nname = "ICBC"\nreserves = "100.00"\n'
         '[[orders]]\noperator = "ICBC"\namount = "1.00"\n', "operator #1: unknown key 'reserves'"),
        (VALID_HEADER + '[[orders]]\noperator = "ICBC"\namount = "1.00"\nzones = "a"\nx = 1\n',
         "order #1: unknown keys 'x', 'zones'"),
    ],
)
def test_invalid_plans_are_refused_and_change_nothing(
    ledger: LedgerContext, database_url: str, tmp_path: Path, text: str, why: str
) -> None:
    path = tmp_path / "plan.toml"
    path.write_text(text, encoding="utf-8")
    before = (journal_count(ledger), _institution_count(ledger))

    with pytest.raises(InvalidPlan, match=re.escape(why)) as raised:
        load_plan(path)
    assert raised.value.code == "plan_invalid"

    exit_code, _, output = run_cli("issue", "run", str(path), "--database-url", database_url)
    assert exit_code == 2
    assert "[plan_invalid]" in output
    assert why in " ".join(output.split())
    assert (journal_count(ledger), _institution_count(ledger)) == before


@pytest.mark.parametrize(
    "name", ["ICBC\nHead Office", "ICBC\x00", "ICBC\x85", "ICBC \u202eevil", "", "I" * 201]
)
def test_the_service_refuses_operator_names_that_do_not_print_as_they_read(
    ledger: LedgerContext, name: str
) -> None:
    """The API's schema refuses control characters; the CLI and other callers reach the service
    directly, which refuses them too, and more (C1 controls, bidirectional overrides)."""
    before = _institution_count(ledger)
    with pytest.raises(InvalidRequest) as refused:
        issuance.create_operator(ledger, "ICBC", name)
    assert refused.value.code == "name_invalid"
    assert _institution_count(ledger) == before
    assert issuance.create_operator(ledger, "ICBC", "ICBC Head Office").name == "ICBC Head Office"


def _institution_count(ledger: LedgerContext) -> int:
    with ledger.read() as connection:
        return connection.execute(select(func.count()).select_from(institutions)).scalar_one()


def test_orders_over_quota_fail_with_quota_exceeded_and_exit_1(
    ledger: LedgerContext, database_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "plan.toml"
    path.write_text(
        'run_id = "tight"\n'
        '[[operators]]\ncode = "ICBC"\nname = "ICBC"\nquota = "100.00"\nreserve = "1000.00"\n'
        '[[orders]]\noperator = "ICBC"\nzone = "shenzhen"\namount = "60.00"\n'
        '[[orders]]\noperator = "ICBC"\nzone = "shenzhen"\namount = "60.00"\n'
        '[[orders]]\noperator = "ICBC"\nzone = "suzhou"\namount = "40.00"\n',
        encoding="utf-8",
    )
    for attempt in range(2):  # the failure is stable: a re-run neither issues nor succeeds
        exit_code, report, output = run_cli("issue", "run", str(path), "--database-url",
                                            database_url, "--json")
        assert exit_code == 1, output
        assert [(f["order"], f["operator"], f["code"]) for f in report["failures"]] == [
            (2, "ICBC", "quota_exceeded")
        ]
        assert report["issued_fen"] == yuan(100)
        assert (report["orders_issued_now"], report["orders_already_done"]) == (
            (2, 0) if attempt == 0 else (0, 2)
        )
    assert sum(issued_by_entry(ledger, "tight").values()) == yuan(100)

    exit_code, _, output = run_cli("issue", "run", str(path), "--database-url", database_url)
    assert exit_code == 1
    assert "quota_exceeded" in output
    assert run_audit(ledger).ok


def test_a_changed_plan_under_the_same_run_id_is_told_to_take_a_new_run_id(
    ledger: LedgerContext, database_url: str, tmp_path: Path
) -> None:
    plan = EXAMPLE_PLAN.read_text(encoding="utf-8")
    execute_plan(ledger, load_plan(EXAMPLE_PLAN))
    entries = journal_count(ledger)
    changed_reserve = tmp_path / "reserve.toml"
    changed_reserve.write_text(plan.replace('reserve = "600000.00"', 'reserve = "700000.00"'),
                               encoding="utf-8")
    assert changed_reserve.read_text(encoding="utf-8") != plan
    exit_code, _, output = run_cli("issue", "run", str(changed_reserve), "--database-url",
                                   database_url)
    assert exit_code == 2 and output.startswith("error [entry_conflict] ")
    assert "give a changed plan a new run_id" in " ".join(output.split())

    changed_order = tmp_path / "order.toml"
    changed_order.write_text(plan.replace('amount = "250000.00"', 'amount = "250001.00"', 1),
                             encoding="utf-8")
    assert changed_order.read_text(encoding="utf-8") != plan
    exit_code, report, _ = run_cli("issue", "run", str(changed_order), "--database-url",
                                   database_url, "--json")
    assert exit_code == 1
    [failure] = report["failures"]
    assert failure["code"] == "entry_conflict"
    assert "give a changed plan a new run_id" in failure["detail"]
    assert journal_count(ledger) == entries
