"""Success rate and cost per successful request over time, one line per policy."""

from __future__ import annotations

from pathlib import Path

from sim.runner import ScenarioResult

# Switchyard's lines are drawn last and thicker so they stay visible over the baselines.
HIGHLIGHT = ("switchyard", "switchyard-no-prediction")


def plot(result: ScenarioResult, path: Path) -> Path:
    """Draw the scenario's time series to a PNG file and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, (success_axis, cost_axis) = pyplot.subplots(
        2, 1, figsize=(10, 6.5), sharex=True, constrained_layout=True
    )
    names = sorted(result.series, key=lambda name: name in HIGHLIGHT)
    for name in names:
        series = result.series[name]
        minutes = [t / 60.0 for t in series.times]
        width = 2.2 if name in HIGHLIGHT else 1.2
        style = "--" if name == "switchyard-no-prediction" else "-"
        success_axis.plot(minutes, _gaps(series.success_rate), style, linewidth=width, label=name)
        cost_axis.plot(minutes, _gaps(series.cost_per_success), style, linewidth=width, label=name)
    for incident in result.scenario.all_incidents():
        for axis in (success_axis, cost_axis):
            axis.axvspan(incident.start / 60.0, incident.end / 60.0, color="0.9", zorder=0)
    success_axis.set_ylabel("success rate (%)")
    cost_axis.set_ylabel("cost per successful request")
    cost_axis.set_xlabel("minutes (shaded: incidents)")
    success_axis.set_title(f"{result.scenario.title} (seed {result.seed})", loc="left")
    success_axis.legend(loc="lower left", fontsize="small", ncols=3)
    for axis in (success_axis, cost_axis):
        axis.grid(True, alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
    return path


def _gaps(values: tuple[float | None, ...]) -> list[float]:
    """Values with None as NaN, so the line breaks where a bucket had nothing to show."""
    return [float("nan") if v is None else v for v in values]
