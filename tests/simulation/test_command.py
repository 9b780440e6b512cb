"""`cbdc simulate` from the command line: a tiny pilot on a fresh SQLite file, its summary, the
files it names, its verdict; and a refusal to run on a ledger that already holds entries."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from cbdc.cli import app
from cbdc.simulation.scenario import default_scenario_text

runner = CliRunner()


def one_day_scenario(folder: Path, name: str, *, people: int, merchants: int,
                     payments: int) -> Path:
    """The default scenario cut to one day of ``payments`` among ``people`` and ``merchants``."""
    text = (
        default_scenario_text()
        .replace("days = 7", "days = 1")
        .replace("count = 100000", f"count = {payments}")
        .replace("count = 10000", f"count = {people}")
        .replace("count = 500", f"count = {merchants}")
    )
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def tiny_scenario(folder: Path) -> Path:
    return one_day_scenario(folder, "tiny.toml", people=40, merchants=4, payments=200)


def test_simulate_writes_the_report_and_passes_its_invariants(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, ["simulate", str(tiny_scenario(tmp_path)), "--seed", "3",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "ALL INVARIANTS HOLD" in result.output
    assert str(out / "report.html") in result.output
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["ok"] is True
    assert metrics["scenario"]["payments"] == 200
    assert metrics["final_state_hash"] in result.output
    assert (out / "ledger.sqlite3").exists()
    said = re.search(r"wall time ([0-9.]+) s \(([0-9.]+) s of it in the ledger's calls\)",
                     result.output)
    assert said is not None, result.output
    assert float(said[2]) <= float(said[1])
    assert abs(float(said[2]) - sum(metrics["ledger_seconds"].values())) < 0.1


def test_scale_multiplies_the_pilot(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, ["simulate", str(tiny_scenario(tmp_path)), "--scale", "2",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert (metrics["scenario"]["wallets"], metrics["scenario"]["payments"]) == (80, 400)


def test_simulate_refuses_a_ledger_that_already_holds_entries(tmp_path: Path) -> None:
    scenario = tiny_scenario(tmp_path)
    url = f"sqlite:///{tmp_path / 'used.sqlite3'}"
    first = runner.invoke(app, ["simulate", str(scenario), "--database-url", url,
                                "--out", str(tmp_path / "first")])
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, ["simulate", str(scenario), "--database-url", url,
                                "--out", str(tmp_path / "again")])
    assert again.exit_code == 2
    assert "ledger_not_empty" in again.output
    assert not (tmp_path / "again" / "metrics.json").exists()


def test_the_final_state_does_not_depend_on_the_process(tmp_path: Path) -> None:
    """Two runs in fresh interpreters with different string-hash seeds (PYTHONHASHSEED) reach
    the same final state: nothing the ledger writes follows the order of a set or dict of
    strings. A day with offline payments, so that tills upload several cards' payments at once."""
    scenario = one_day_scenario(tmp_path, "day.toml", people=150, merchants=6, payments=1500)
    hashes = []
    for hash_seed in ("1", "2"):
        out = tmp_path / f"out-{hash_seed}"
        finished = subprocess.run(
            [sys.executable, "-m", "cbdc", "simulate", str(scenario), "--seed", "11",
             "--out", str(out)],
            env={**os.environ, "PYTHONHASHSEED": hash_seed}, capture_output=True, text=True,
            timeout=600, check=False,
        )
        assert finished.returncode == 0, finished.stdout + finished.stderr
        metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
        assert metrics["payments"]["settled_by_kind"]["offline"]["count"] > 0
        hashes.append(metrics["final_state_hash"])
    assert hashes[0] == hashes[1]
