"""Success rate and cost per successful request over time, one line per policy.

A scenario with a mix of priority classes shows, instead of the cost, the success rate of
its CRITICAL requests and the service's budget left; its cascade is shaded like an incident.
"""

from __future__ import annotations

from pathlib import Path

from sim.runner import ScenarioResult

# Switchyard's lines are drawn last and thicker so they stay visible over the baselines.
HIGHLIGHT = ("switchyard", "switchyard-no-prediction")
STYLES = {"switchyard-no-prediction": "--", "oracle": ":"}


def plot(result: ScenarioResult, path: Path) -> Path:
    """Draw the scenario's time series to a PNG file and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    by_class = bool(result.class_series)
    figure, axes = pyplot.subplots(
        3 if by_class else 2,
        1,
        figsize=(10, 8.5 if by_class else 6.5),
        sharex=True,
        constrained_layout=True,
    )
    success_axis = axes[0]
    names = sorted(result.series, key=lambda name: name in HIGHLIGHT)
    for name in names:
        series = result.series[name]
        minutes = [t / 60.0 for t in series.times]
        width = 2.2 if name in HIGHLIGHT else 1.2
        style = STYLES.get(name, "-")
        # The oracle is the bound, not a contender: dotted, black.
        color = "black" if name == "oracle" else None
        success_axis.plot(
            minutes, _gaps(series.success_rate), style, linewidth=width, label=name, color=color
        )
        if by_class:
            classes = result.class_series[name]
            critical = _gaps(classes.critical_success_rate)
            axes[1].plot(minutes, critical, style, linewidth=width, label=name, color=color)
            axes[2].plot(
                minutes, classes.budget_left, style, linewidth=width, label=name, color=color
            )
        else:
            cost = _gaps(series.cost_per_success)
            axes[1].plot(minutes, cost, style, linewidth=width, label=name, color=color)
    windows = [(i.start, i.end) for i in result.scenario.all_incidents()]
    if result.scenario.cascade is not None:
        windows.append((result.scenario.cascade.start, result.scenario.cascade.end))
    for start, end in windows:
        for axis in axes:
            axis.axvspan(start / 60.0, end / 60.0, color="0.9", zorder=0)
    success_axis.set_ylabel("success rate (%)")
    if by_class:
        axes[1].set_ylabel("CRITICAL success rate (%)")
        axes[2].set_ylabel("budget left")
    else:
        axes[1].set_ylabel("cost per successful request")
    axes[-1].set_xlabel("minutes (shaded: incidents)")
    success_axis.set_title(f"{result.scenario.title} (seed {result.seed})", loc="left")
    success_axis.legend(loc="lower left", fontsize="small", ncols=3)
    for axis in axes:
        axis.grid(True, alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
    return path


def _gaps(values: tuple[float | None, ...]) -> list[float]:
    """Values with None as NaN, so the line breaks where a bucket had nothing to show."""
    return [float("nan") if v is None else v for v in values]
