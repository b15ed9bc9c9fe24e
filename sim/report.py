"""The per-policy table of a scenario run, for the terminal (rich) and for Markdown docs."""

from __future__ import annotations

from rich.table import Table

from sim.metrics import Summary
from sim.runner import ORACLE, ScenarioResult

HEADERS = (
    "policy",
    "success",
    "first try",
    "cost / success",
    "vs healthy",
    "p50 ms",
    "p95 ms",
    "failed",
    "fail-over",
    "restore",
    "vs oracle",
    "premium vs oracle's",
)
# An oracle premium below this (percentage points over the healthy baseline) is no base for a
# ratio: the cell shows the policy's premium minus the oracle's instead.
RATIO_FLOOR_POINTS = 0.5


def rows(result: ScenarioResult) -> list[tuple[str, ...]]:
    """One row of formatted cells per policy, in the order the policies ran."""
    healthy = result.healthy.cost_per_success
    oracle = next((s for s in result.summaries if s.policy == ORACLE), None)
    return [_row(summary, healthy, oracle) for summary in result.summaries]


def premium(s: Summary, healthy: float | None) -> float | None:
    """Cost per successful request over the healthy baseline's, in percent."""
    cost = s.cost_per_success
    return (cost / healthy - 1.0) * 100.0 if cost and healthy else None


def oracle_cells(s: Summary, healthy: float | None, oracle: Summary | None) -> tuple[str, str]:
    """Success gap to the oracle (percentage points) and the cost premium's ratio to its."""
    if oracle is None:
        return "—", "—"
    gap = f"{s.success_rate - oracle.success_rate:+.3f} pp"
    mine, theirs = premium(s, healthy), premium(oracle, healthy)
    if mine is None or theirs is None:
        return gap, "—"
    if theirs < RATIO_FLOOR_POINTS:
        return gap, f"{mine - theirs:+.1f} pts"
    return gap, f"{mine / theirs:.2f}x"


def _row(s: Summary, healthy: float | None, oracle: Summary | None) -> tuple[str, ...]:
    cost = s.cost_per_success
    extra = premium(s, healthy)
    versus = f"{extra:+.1f}%" if extra is not None else "—"
    return (
        s.policy,
        f"{s.success_rate:.3f}%",
        f"{s.first_try_rate:.2f}%",
        f"{cost:.5f}" if cost is not None else "—",
        versus,
        f"{s.p50_ms:.0f}" if s.p50_ms is not None else "—",
        f"{s.p95_ms:.0f}" if s.p95_ms is not None else "—",
        f"{s.failed:,}",
        failover_cell(s),
        restore_cell(s),
        *oracle_cells(s, healthy, oracle),
    )


def failover_cell(s: Summary) -> str:
    """Mean time to fail over; "n/a" without traffic on the node, "never" if it never moved."""
    times = s.shifts.failover
    if not times:
        return "n/a"
    return _mean_cell(times)


def restore_cell(s: Summary) -> str:
    """Mean time to restore; "—" when the policy never failed over."""
    times = s.shifts.restore
    if not times:
        return "—"
    return _mean_cell(times)


def _mean_cell(times: tuple[float | None, ...]) -> str:
    present = [t for t in times if t is not None]
    if not present:
        return "never"
    cell = f"{sum(present) / len(present):.0f} s"
    if len(present) < len(times):
        cell += f" ({len(present)}/{len(times)})"
    return cell


def heading(result: ScenarioResult) -> str:
    """What was run: scenario, seed, requests per policy, the healthy baseline."""
    scenario = result.scenario
    healthy = result.healthy.cost_per_success
    baseline = f"{healthy:.5f}" if healthy is not None else "—"
    # A cascade's consumer retries are requests too: the healthy run has none of them.
    requests = result.summaries[0].requests if result.summaries else result.healthy.requests
    return (
        f"{scenario.title} — {scenario.name}, seed {result.seed}, "
        f"{requests:,} requests per policy over "
        f"{scenario.duration_seconds / 60:g} min, {scenario.client.retries} client "
        f"retr{'y' if scenario.client.retries == 1 else 'ies'}; healthy baseline "
        f"{baseline} per successful request"
    )


def rich_table(result: ScenarioResult) -> Table:
    """The table for the terminal."""
    table = Table(title=heading(result), title_justify="left")
    for index, header in enumerate(HEADERS):
        table.add_column(header, justify="left" if index == 0 else "right", no_wrap=True)
    for row in rows(result):
        table.add_row(*row)
    return table


def markdown_table(result: ScenarioResult) -> str:
    """The table as GitHub Markdown."""
    lines = [
        "| " + " | ".join(HEADERS) + " |",
        "|---|" + "---:|" * (len(HEADERS) - 1),
    ]
    lines.extend("| " + " | ".join(row) + " |" for row in rows(result))
    return "\n".join(lines)


def throughput_line(result: ScenarioResult) -> str:
    """Simulated requests per second of wall time, over every policy of the run."""
    rate = result.requests / result.wall_seconds if result.wall_seconds > 0 else 0.0
    return (
        f"simulated {result.requests:,} requests in {result.wall_seconds:.2f} s of wall time "
        f"({rate:,.0f} requests/s)"
    )


def class_headers(result: ScenarioResult) -> tuple[str, ...]:
    """The per-class table's columns: success per priority, refusals, budget left."""
    first = next(iter(result.classes.values()), ())
    return (
        "policy",
        *(f"{c.priority.value} success" for c in first),
        "shed",
        "retries refused",
        "out of budget",
        "budget left",
    )


def class_rows(result: ScenarioResult) -> list[tuple[str, ...]]:
    """Per policy: each priority's success, its refused requests by reason, the budget left."""
    rows = []
    for summary in result.summaries:
        classes = result.classes.get(summary.policy, ())
        rows.append(
            (
                summary.policy,
                *(f"{c.success_rate:.2f}%" for c in classes),
                f"{sum(c.shed for c in classes):,}",
                f"{sum(c.retries_refused for c in classes):,}",
                f"{sum(c.out_of_budget for c in classes):,}",
                f"{summary.budget_left:.2f}",
            )
        )
    return rows


def class_rich_table(result: ScenarioResult) -> Table:
    """The per-class table for the terminal."""
    table = Table(title="Per priority class", title_justify="left")
    for index, header in enumerate(class_headers(result)):
        table.add_column(header, justify="left" if index == 0 else "right", no_wrap=True)
    for row in class_rows(result):
        table.add_row(*row)
    return table


def class_markdown_table(result: ScenarioResult) -> str:
    """The per-class table as GitHub Markdown."""
    headers = class_headers(result)
    lines = ["| " + " | ".join(headers) + " |", "|---|" + "---:|" * (len(headers) - 1)]
    lines.extend("| " + " | ".join(row) + " |" for row in class_rows(result))
    return "\n".join(lines)
