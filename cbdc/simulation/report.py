"""The report of a run: PNG charts, a self-contained ``report.html`` and ``metrics.json``.

Charts are drawn with matplotlib's Agg backend from the run's aggregates (never from per-payment
records), so drawing them costs the same at any scale. The HTML embeds every chart as a base64
data URI and needs nothing else to open. Amounts are converted to yuan only for display.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cbdc.domain.money import format_yuan
from cbdc.simulation.metrics import CHEAT_OUTCOMES, DELAY_BUCKETS_HOURS, Metrics

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from cbdc.simulation.driver import RunResult

CHARTS = (
    ("supply", "Supply and holdings over time"),
    ("payments_per_hour", "Payments per hour"),
    ("volume_by_class_zone", "Volume by wallet class and pilot zone"),
    ("rejections", "Rejections by reason"),
    ("offline_delay", "Offline settlement delay"),
    ("fraud", "Cheats injected, refused or detected, and losses"),
)


@dataclass(frozen=True, slots=True)
class Written:
    html: Path
    metrics: Path
    charts: tuple[Path, ...]


def result_dict(result: RunResult) -> dict[str, Any]:
    scenario = result.scenario
    return {
        "scenario": {
            "name": scenario.name,
            "seed": result.seed,
            "start_date": scenario.start_date.isoformat(),
            "days": scenario.days,
            "operators": len(scenario.operators),
            "zones": [zone.code for zone in scenario.zones],
            "wallets": scenario.wallet_count,
            "merchants": scenario.merchant_count,
            "payments": scenario.payment_count,
        },
        "final_state_hash": result.final_state_hash,
        "ok": result.ok,
        "invariants": result.invariants,
        "offline_run": result.offline_run,
        "wall_seconds": round(result.wall_seconds, 3),
        "issuance": result.issuance.as_dict(),
        "audit": result.verdicts.audit,
        "supply": result.verdicts.supply,
        **result.metrics.as_dict(),
    }


def write_report(result: RunResult, out: Path) -> Written:
    out.mkdir(parents=True, exist_ok=True)
    data = result_dict(result)
    metrics_path = out / "metrics.json"
    metrics_path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    charts = draw_charts(result, out)
    html_path = out / "report.html"
    html_path.write_text(_html(result, data, charts), encoding="utf-8")
    return Written(html=html_path, metrics=metrics_path, charts=tuple(charts))


# -- charts ---------------------------------------------------------------------------------

def draw_charts(result: RunResult, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for name, title in CHARTS:
        figure = plt.figure(figsize=(10, 4.2), dpi=100)
        try:
            DRAWERS[name](result, figure)
            figure.suptitle(title)
            figure.tight_layout()
            path = out / f"{name}.png"
            figure.savefig(path, format="png")
            paths.append(path)
        finally:
            plt.close(figure)
    return paths


def _cny(amount_fen: int) -> float:
    """Yuan as a float, for drawing only."""
    return amount_fen / 100


def _cny_axis(axes: Any) -> None:
    """Whole yuan with thousands separators, not matplotlib's 1e6 offset."""
    from matplotlib.ticker import FuncFormatter

    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))


def _legend_on_top(axes: Any, *, columns: int) -> None:
    """The legend in one row along the top, over headroom added for it, so it hides no data."""
    low, high = axes.get_ylim()
    axes.set_ylim(low, high + (high - low) * 0.15)
    axes.legend(loc="upper center", ncol=columns, fontsize=8, frameon=False)


def _day_ticks(axes: Any, hours: int) -> None:
    axes.set_xticks(range(0, hours + 1, 24))
    axes.set_xticklabels([f"day {d + 1}" for d in range(hours // 24 + 1)], fontsize=8)
    axes.set_xlim(0, max(hours, 1))


def _supply(result: RunResult, figure: Figure) -> None:
    axes = figure.add_subplot(1, 1, 1)
    samples = result.metrics.supply
    hours = [s.hour + 1 for s in samples]
    for label, values in (
        ("e-CNY outstanding", [s.outstanding_fen for s in samples]),
        ("operator floats", [s.floats_fen for s in samples]),
        ("wallets", [s.wallets_fen for s in samples]),
        ("offline escrow", [s.escrow_fen for s in samples]),
    ):
        axes.plot(hours, [_cny(v) for v in values], label=label)
    axes.set_ylabel("CNY")
    _cny_axis(axes)
    _legend_on_top(axes, columns=4)
    _day_ticks(axes, result.metrics.hours)


def _per_hour(result: RunResult, figure: Figure) -> None:
    axes = figure.add_subplot(1, 1, 1)
    metrics = result.metrics
    hours = range(metrics.hours)
    axes.bar(hours, metrics.settled_by_hour, width=1.0, label="settled", color="#2a7ab9")
    axes.bar(hours, metrics.rejected_by_hour, width=1.0, bottom=metrics.settled_by_hour,
             label="refused (honest)", color="#d9534f")
    axes.set_ylabel("payments")
    _legend_on_top(axes, columns=2)
    _day_ticks(axes, metrics.hours)


def _by_class_zone(result: RunResult, figure: Figure) -> None:
    metrics = result.metrics
    left = figure.add_subplot(1, 2, 1)
    classes = sorted(metrics.by_class)
    left.bar([f"class {c}" for c in classes],
             [_cny(metrics.by_class[c].volume_fen) for c in classes], color="#5cb85c")
    left.set_ylabel("CNY settled")
    _cny_axis(left)
    right = figure.add_subplot(1, 2, 2)
    zones = sorted(metrics.by_zone)
    right.bar(zones, [_cny(metrics.by_zone[z].volume_fen) for z in zones], color="#f0ad4e")
    _cny_axis(right)


def _rejections(result: RunResult, figure: Figure) -> None:
    axes = figure.add_subplot(1, 1, 1)
    metrics = result.metrics
    codes = sorted(set(metrics.honest_rejections) | set(metrics.cheat_rejections))
    if not codes:
        axes.text(0.5, 0.5, "no rejections", ha="center", va="center")
        axes.set_axis_off()
        return
    positions = range(len(codes))
    honest = [metrics.honest_rejections.get(code, 0) for code in codes]
    cheats = [metrics.cheat_rejections.get(code, 0) for code in codes]
    axes.barh(positions, honest, label="honest traffic", color="#d9534f")
    axes.barh(positions, cheats, left=honest, label="injected cheats", color="#6f42c1")
    axes.set_yticks(list(positions))
    axes.set_yticklabels(codes, fontsize=8)
    axes.set_xlabel("refusals")
    _legend_on_top(axes, columns=2)


def _offline_delay(result: RunResult, figure: Figure) -> None:
    axes = figure.add_subplot(1, 1, 1)
    histogram = result.metrics.offline_delay_hours
    if not result.offline_run or not histogram:
        axes.text(0.5, 0.5, "offline payments were not run in this simulation",
                  ha="center", va="center")
        axes.set_axis_off()
        return
    labels = [f"<= {b} h" for b in DELAY_BUCKETS_HOURS] + [f"> {DELAY_BUCKETS_HOURS[-1]} h"]
    counts = [histogram.get(b, 0) for b in DELAY_BUCKETS_HOURS] + [histogram.get(0, 0)]
    axes.bar(labels, counts, color="#17a2b8")
    axes.set_ylabel("offline payments settled")


def _fraud(result: RunResult, figure: Figure) -> None:
    axes = figure.add_subplot(1, 1, 1)
    table = result.metrics.injections.by_kind()
    if not table:
        axes.text(0.5, 0.5, "no cheats injected", ha="center", va="center")
        axes.set_axis_off()
        return
    kinds = list(table)
    bottom = [0] * len(kinds)
    colours = {"refused": "#5cb85c", "detected": "#17a2b8", "accepted": "#d9534f"}
    for outcome in CHEAT_OUTCOMES:
        counts = [table[kind][outcome] for kind in kinds]
        axes.bar(kinds, counts, bottom=bottom, label=outcome, color=colours[outcome])
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    metrics = result.metrics
    axes.set_ylabel("cheats")
    axes.set_title(f"fraud cases {metrics.fraud_cases}, losses "
                   f"{format_yuan(metrics.fraud_losses_fen)} CNY", fontsize=9)
    _legend_on_top(axes, columns=3)


#: What draws each chart of :data:`CHARTS` into a figure.
DRAWERS: dict[str, Callable[[RunResult, Figure], None]] = {
    "supply": _supply, "payments_per_hour": _per_hour,
    "volume_by_class_zone": _by_class_zone, "rejections": _rejections,
    "offline_delay": _offline_delay, "fraud": _fraud,
}


# -- HTML -------------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1080px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.pass { color: #1e7e34; font-weight: bold; } .fail { color: #c82333; font-weight: bold; }
img { max-width: 100%; } code { font-size: 0.9em; }
"""


def _html(result: RunResult, data: dict[str, Any], charts: list[Path]) -> str:
    e = html.escape
    verdict = "PASSED" if result.ok else "FAILED"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>cbdc simulation: {e(result.scenario.name)} (seed {result.seed})</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Simulation {e(result.scenario.name)}, seed {result.seed}</h1>",
        f'<p>Verdict: <span class="{"pass" if result.ok else "fail"}">{verdict}</span>. '
        f"Final state hash <code>{e(result.final_state_hash)}</code>. "
        f"Wall time {result.wall_seconds:.1f} s, "
        f"{sum(result.metrics.ledger_seconds.values()):.1f} s of it in the ledger's calls.</p>",
        "<h2>Invariants</h2>",
        _table(["invariant", "result"],
               [[name, _verdict(ok)] for name, ok in result.invariants.items()], raw=True),
        "<h2>Summary</h2>",
        _table(["measure", "value"], _summary_rows(result)),
        "<h2>Payments by kind</h2>",
        _table(["kind", "attempted", "settled", "volume (CNY)", "not run"], _kind_rows(result)),
        "<h2>Cheats</h2>",
        _table(["kind", *CHEAT_OUTCOMES],
               [[kind, *(str(row[o]) for o in CHEAT_OUTCOMES)]
                for kind, row in result.metrics.injections.by_kind().items()]),
        "<h2>Where the time went</h2>",
        _table(["phase", "wall (s)", "in the ledger (s)", "in the simulation (s)"],
               _time_rows(result.metrics)),
        "<h2>Charts</h2>",
    ]
    titles = dict(CHARTS)
    for path in charts:
        encoded = base64.b64encode(path.read_bytes()).decode("ascii")
        parts.append(f"<h3>{e(titles[path.stem])}</h3>")
        parts.append(f'<img alt="{e(titles[path.stem])}" src="data:image/png;base64,{encoded}">')
    parts.append("<h2>Audit findings</h2>")
    findings = data["audit"]["findings"]
    parts.append("<p>none</p>" if not findings else _table(
        ["code", "subject", "detail"], [[f["code"], f["subject"], f["detail"]] for f in findings]))
    if result.metrics.notes:
        parts.append("<h2>Notes</h2><ul>")
        parts.extend(f"<li>{e(note)}</li>" for note in sorted(set(result.metrics.notes)))
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _verdict(ok: bool) -> str:
    return '<span class="pass">pass</span>' if ok else '<span class="fail">FAIL</span>'


def _summary_rows(result: RunResult) -> list[list[str]]:
    metrics, scenario = result.metrics, result.scenario
    supply = result.verdicts.supply["total"]
    return [
        ["wallets / merchants", f"{scenario.wallet_count:,} / {scenario.merchant_count:,}"],
        ["payments planned", f"{scenario.payment_count:,}"],
        ["payments settled", f"{metrics.settled_count:,}"],
        ["volume settled (CNY)", format_yuan(metrics.settled_volume_fen)],
        ["honest refusals", f"{sum(metrics.honest_rejections.values()):,}"],
        ["cheats injected / caught",
         f"{metrics.injections.injected:,} / {metrics.injections.caught:,}"],
        ["e-CNY issued (CNY)", format_yuan(result.issuance.issued_fen)],
        ["e-CNY outstanding at the end (CNY)", format_yuan(supply["outstanding_fen"])],
        ["holdings at the end (CNY)", format_yuan(supply["holdings_fen"])],
        ["offline payments", "run" if result.offline_run else "not run"],
    ]


def _time_rows(metrics: Metrics) -> list[list[str]]:
    """Each phase's wall time, split into the time inside the ledger's calls (in-process: the
    services and the database; over HTTP: the server and the network) and the rest."""
    rows = []
    for phase, wall in metrics.phase_seconds.items():
        ledger = metrics.ledger_seconds[phase]  # measured with the phase (Driver._timed)
        rows.append([phase, f"{wall:.1f}", f"{ledger:.1f}", f"{wall - ledger:.1f}"])
    return rows


def _kind_rows(result: RunResult) -> list[list[str]]:
    metrics = result.metrics
    kinds = sorted(set(metrics.attempts_by_kind) | set(metrics.not_run) | set(metrics.by_kind))
    return [
        [kind, f"{metrics.attempts_by_kind.get(kind, 0):,}",
         f"{metrics.by_kind[kind].count if kind in metrics.by_kind else 0:,}",
         format_yuan(metrics.by_kind[kind].volume_fen if kind in metrics.by_kind else 0),
         f"{metrics.not_run.get(kind, 0):,}"]
        for kind in kinds
    ]


def _table(header: list[str], rows: list[list[str]], *, raw: bool = False) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(
            f"<td>{cell if raw and i else e(cell)}</td>" for i, cell in enumerate(row)
        ) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
