"""A small pilot, simulated end to end on SQLite and PostgreSQL: reproducible from its seed, its
books hold, every cheat it injected was refused or detected, and its report renders."""

from __future__ import annotations

import base64
import gc
import itertools
import json
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from html.parser import HTMLParser
from pathlib import Path

import pytest
from sqlalchemy import select

from cbdc.domain.errors import CbdcError
from cbdc.services import offline
from cbdc.services.context import open_ledger
from cbdc.simulation.report import CHARTS, DRAWERS
from cbdc.simulation.runner import Simulation, in_process_port, simulate
from cbdc.simulation.scenario import Misbehaviour, Scenario, default_scenario
from cbdc.storage.tables import payments
from tests.conftest import ENGINES, fresh_database

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SEED = 7


def small_scenario() -> Scenario:
    """Two days, 100 people, 10 merchants, 800 payments, with cheats at 5-20x the default
    rates so that every kind of cheat is injected several times."""
    scenario = default_scenario().with_counts(wallets=100, merchants=10, payments=800)
    return replace(
        scenario,
        days=2,
        misbehaviour=Misbehaviour(
            replay_percent=Fraction(2), over_cap_percent=Fraction(1),
            forged_signature_percent=Fraction(2), cloned_card_percent=Fraction(10),
        ),
    )


@dataclass
class Runs:
    engine: str
    first: Simulation
    again: Simulation
    other_seed: Simulation
    database_url: str
    out: Path


def _run(database_url: str, seed: int, out: Path | None) -> Simulation:
    scenario = small_scenario()
    return simulate(scenario, seed, port=in_process_port(scenario, seed, database_url), out=out)


@pytest.fixture(scope="module", params=ENGINES)
def runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Runs]:
    engine = request.param
    folder = tmp_path_factory.mktemp(f"simulation-{engine}")
    databases = [fresh_database(engine, request, folder) for _ in range(3)]
    urls = [next(database) for database in databases]
    out = folder / "report"
    yield Runs(
        engine=engine,
        first=_run(urls[0], SEED, out),
        again=_run(urls[1], SEED, None),
        other_seed=_run(urls[2], SEED + 1, None),
        database_url=urls[0],
        out=out,
    )
    for database in databases:
        for _ in database:  # drops the PostgreSQL databases
            pass


def test_the_same_seed_gives_the_same_final_state_and_another_seed_does_not(runs: Runs) -> None:
    first, again, other = (runs.first.result, runs.again.result, runs.other_seed.result)
    assert len(first.final_state_hash) == 64
    assert first.final_state_hash == again.final_state_hash
    assert other.final_state_hash != first.final_state_hash
    assert first.metrics.as_dict()["by_hour"] == again.metrics.as_dict()["by_hour"]


def test_the_books_hold_after_the_pilot(runs: Runs) -> None:
    result = runs.first.result
    assert result.invariants == {
        "issuance_run_complete": True,
        "audit_passed": True,
        "supply_balanced": True,
        "every_cheat_refused_or_detected": True,
        "client_books_match_ledger": True,
    }
    metrics = result.metrics
    assert metrics.settled_count > 0.9 * metrics.attempted_count
    assert result.verdicts.audit["entries_checked"] >= metrics.settled_count
    total = result.verdicts.supply["total"]
    assert total["outstanding_fen"] == total["holdings_fen"] == result.issuance.issued_fen


def test_every_injected_cheat_was_refused_or_detected_and_moved_no_money(runs: Runs) -> None:
    result = runs.first.result
    injections = result.metrics.injections
    scenario = result.scenario
    planned = (
        int(scenario.payment_count * scenario.misbehaviour.replay_percent / 100)
        + int(scenario.payment_count * scenario.misbehaviour.over_cap_percent / 100)
        + int(scenario.payment_count * scenario.misbehaviour.forged_signature_percent / 100)
    )
    offline_slots = scenario.payment_count * scenario.mix_share("offline") // sum(
        share for _, share in scenario.mix)
    clones = int(offline_slots * scenario.misbehaviour.cloned_card_percent / 100)
    assert clones >= 5
    assert injections.injected == planned + clones
    by_kind = injections.by_kind()
    assert set(by_kind) == {"replay", "over_cap", "forged_signature", "cloned_card"}
    assert all(row["accepted"] == 0 for row in by_kind.values())
    assert injections.caught == injections.injected
    # Every cloned card was detected: a fraud case against it, and its twin's spending paid by
    # the operator (a loss), never by a second draw on the escrow.
    assert by_kind["cloned_card"] == {"refused": 0, "detected": clones, "accepted": 0}
    cloned = {entry.subject_id for entry in injections.entries if entry.kind == "cloned_card"}
    metrics = result.metrics
    assert metrics.fraud_cases >= clones and metrics.fraud_losses_fen > 0
    refused = [entry for entry in injections.entries if entry.outcome == "refused"]
    assert sum(result.metrics.cheat_rejections.values()) == len(refused)
    assert {entry.code for entry in refused if entry.kind == "over_cap"} == {
        "single_payment_limit_exceeded"}
    # Independently of what the ledger answered: no refused cheat left a payment behind.
    context = open_ledger(runs.database_url)
    try:
        with context.read() as connection:
            settled = set(connection.execute(
                select(payments.c.payment_id).where(
                    payments.c.payment_id.in_([entry.subject_id for entry in refused]))
            ).scalars())
        cases = offline.fraud_cases(context)
    finally:
        context.dispose()
    assert settled == set()
    assert cloned <= {case.device_id for case in cases if case.code == "offline_double_spend"}


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.headings: list[str] = []
        self._in_heading = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.sources.append(dict(attrs).get("src") or "")
        self._in_heading = tag in ("h1", "h2", "h3")

    def handle_data(self, data: str) -> None:
        if self._in_heading:
            self.headings.append(data)
            self._in_heading = False


def _png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(PNG_SIGNATURE)
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_the_report_renders_with_every_chart_embedded(runs: Runs) -> None:
    written = runs.first.written
    assert written is not None
    parser = _Images()
    parser.feed(written.html.read_text(encoding="utf-8"))
    assert "Invariants" in parser.headings
    assert len(parser.sources) == len(CHARTS)
    for source in parser.sources:
        prefix = "data:image/png;base64,"
        assert source.startswith(prefix)
        assert _png_size(base64.b64decode(source[len(prefix):])) == (1000, 420)
    import matplotlib.image

    for name, _title in CHARTS:
        path = runs.out / f"{name}.png"
        assert _png_size(path.read_bytes()) == (1000, 420)
        pixels = matplotlib.image.imread(path)
        colours = {tuple(pixel) for pixel in pixels.reshape(-1, pixels.shape[-1])[::97]}
        assert len(colours) > 5, f"{name}.png looks blank"
    metrics = json.loads(written.metrics.read_text(encoding="utf-8"))
    assert metrics["final_state_hash"] == runs.first.result.final_state_hash
    assert metrics["invariants"] == runs.first.result.invariants
    assert metrics["payments"]["settled"] == runs.first.result.metrics.settled_count
    assert "Where the time went" in parser.headings


@pytest.mark.parametrize("name", [name for name, _title in CHARTS])
def test_no_chart_legend_hides_its_data(runs: Runs, name: str) -> None:
    """No point of a line and no bar lies under a chart's legend (it once covered the top line
    of the supply chart and the tallest bar of the cheats chart)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4.2), dpi=100)
    DRAWERS[name](runs.first.result, figure)
    figure.suptitle(dict(CHARTS)[name])  # laid out as draw_charts lays it out
    figure.tight_layout()
    figure.draw_without_rendering()
    for axes in figure.axes:
        legend = axes.get_legend()
        if legend is None:
            continue
        box = legend.get_window_extent()
        drawn = 0
        for line in axes.lines:
            for x, y in axes.transData.transform(line.get_xydata()):
                drawn += 1
                assert not box.contains(x, y), f"the legend of {name} covers a line"
        for patch in axes.patches:
            extent = patch.get_window_extent()
            if extent.width > 0 and extent.height > 0:
                drawn += 1
                assert not box.overlaps(extent), f"the legend of {name} covers a bar"
        assert drawn, f"{name} draws nothing beside its legend"


def test_each_phase_says_how_much_of_its_time_the_ledger_took(runs: Runs) -> None:
    metrics = runs.first.result.metrics
    phases = metrics.phase_seconds
    assert set(metrics.ledger_seconds) == set(phases) == {
        "issuance", "wallets", "payments", "verdicts", "final_state_hash"}
    for phase, in_ledger in metrics.ledger_seconds.items():
        assert 0 < in_ledger <= phases[phase], phase
    # Drawing the payments, the simulated wallets' messages and the offline devices take time
    # of their own: not all of the payments phase is the ledger's.
    assert metrics.ledger_seconds["payments"] < phases["payments"]
    assert metrics.as_dict()["ledger_seconds"].keys() == phases.keys()


def test_sqlite_and_postgresql_reach_the_same_final_state(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    scenario = replace(default_scenario().with_counts(wallets=40, merchants=4, payments=300),
                       days=1)
    hashes = {}
    for engine in ENGINES:
        database = fresh_database(engine, request, tmp_path)
        url = next(database)
        result = simulate(scenario, SEED, port=in_process_port(scenario, SEED, url)).result
        assert result.ok, result.invariants
        hashes[engine] = result.final_state_hash
        for _ in database:
            pass
    assert hashes["sqlite"] == hashes["postgresql"]


def test_a_run_collects_garbage_less_often_and_restores_the_collector(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    scenario = replace(default_scenario().with_counts(wallets=20, merchants=2, payments=40),
                       days=1)
    database = fresh_database("sqlite", request, tmp_path)
    url = next(database)
    during: set[tuple[int, int, int]] = set()
    saved = gc.get_threshold()
    gc.set_threshold(701, 11, 12)
    try:
        simulate(scenario, SEED, port=in_process_port(scenario, SEED, url),
                 progress=lambda *_: during.add(gc.get_threshold()))
        after = gc.get_threshold()
    finally:
        gc.set_threshold(*saved)
    assert during and all(threshold[0] > 701 for threshold in during)
    assert after == (701, 11, 12)



def _offline_run(scenario: Scenario, url: str) -> tuple[Simulation, list[tuple[str, int]]]:
    """``scenario`` simulated on ``url``, and each upload the devices made: (device, envelopes)."""
    port = in_process_port(scenario, SEED, url)
    uploads: list[tuple[str, int]] = []
    upload = port.upload_offline

    def recorded(batch: Sequence[offline.Upload]) -> list[offline.UploadReport | CbdcError]:
        uploads.extend((each.uploaded_by_device_id, len(each.envelopes)) for each in batch)
        return upload(batch)

    port.upload_offline = recorded  # type: ignore[method-assign,assignment]
    return simulate(scenario, SEED, port=port), uploads


def test_a_device_holding_more_than_one_upload_takes_uploads_it_in_turn(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With uploads of at most 2 envelopes (the API takes 1,000), busy tills and cards split
    what they hold over several uploads; every offline payment still settles, as it does with
    the API's limit."""
    scenario = replace(default_scenario().with_counts(wallets=40, merchants=2, payments=400),
                       days=1)
    offline_settled = {}
    for limit in (1_000, 2):
        monkeypatch.setattr("cbdc.simulation.offline.UPLOAD_ENVELOPES_MAX", limit)
        folder = tmp_path / str(limit)
        folder.mkdir()
        database = fresh_database("sqlite", request, folder)
        simulation, uploads = _offline_run(scenario, next(database))
        result = simulation.result
        assert result.ok, result.invariants
        assert not any("still unsettled" in note for note in result.metrics.notes)
        offline_settled[limit] = result.metrics.as_dict()["payments"]["settled_by_kind"]["offline"]
        assert max(size for _, size in uploads) <= limit
        split = [first for first, then in itertools.pairwise(uploads)
                 if first[0] == then[0] and first[1] == limit]
        assert bool(split) == (limit == 2)  # only the small limit splits a device's upload
        for _ in database:
            pass
    assert offline_settled[2] == offline_settled[1_000]
    assert offline_settled[2]["count"] > 20
