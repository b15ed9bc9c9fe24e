"""`switchyard simulate`: run a scenario with a progress bar, print the table, draw the plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sim.plot import plot as draw_plot
from sim.report import (
    class_markdown_table,
    class_rich_table,
    heading,
    markdown_table,
    rich_table,
    throughput_line,
)
from sim.runner import ABLATIONS, POLICIES, planned_requests, run_scenario
from sim.scenario import ScenarioError, load_scenario

TABLE_WIDTH = 170


def simulate_command(
    scenario_name: str,
    policies: Sequence[str] | None,
    seed: int,
    duration: float | None,
    retries: int | None,
    plot: Path | None,
    markdown: bool,
    console: Console | None = None,
) -> int:
    """Run the command; returns the exit status."""
    console = console or Console()
    if not console.is_terminal:
        # Piped or captured output: wide enough that no column of the table wraps.
        console = Console(file=console.file, width=max(console.width, TABLE_WIDTH))
    chosen = list(policies) if policies else list(POLICIES)
    unknown = [p for p in chosen if p not in POLICIES and p not in ABLATIONS]
    if unknown:
        known = ", ".join([*POLICIES, *ABLATIONS])
        console.print(f"[red]error:[/] unknown policy {', '.join(unknown)}; use {known}")
        return 2
    try:
        scenario = load_scenario(scenario_name).with_client(retries)
    except ScenarioError as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2
    if duration is not None:
        scenario = scenario.truncated(duration)
    try:
        total = planned_requests(scenario, seed, len(chosen))
    except KeyError as exc:  # a consumer or dependency the catalog does not have
        console.print(
            f"[red]error:[/] {scenario_name}: {exc.args[0]}", highlight=False, soft_wrap=True
        )
        return 2
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(f"simulating {scenario.name}", total=total)
        result = run_scenario(scenario, chosen, seed, progress=lambda n: progress.advance(task, n))
    if markdown:
        console.print(heading(result), markup=False, highlight=False, soft_wrap=True)
        console.print()
        console.print(markdown_table(result), markup=False, highlight=False, soft_wrap=True)
        if result.classes:
            console.print()
            console.print(
                class_markdown_table(result), markup=False, highlight=False, soft_wrap=True
            )
    else:
        console.print(rich_table(result))
        if result.classes:
            console.print(class_rich_table(result))
    console.print(throughput_line(result), highlight=False)
    if plot is not None:
        console.print(f"plot written to {draw_plot(result, plot)}", highlight=False)
    return 0
