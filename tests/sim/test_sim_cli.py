"""`switchyard simulate`: the table, the Markdown form, the plot and the errors."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from switchyard.cli import app

runner = CliRunner()


def test_simulate_prints_the_table_and_draws_the_plot(tmp_path: Path) -> None:
    plot = tmp_path / "img" / "stripe.png"

    result = runner.invoke(
        app,
        [
            "simulate",
            "stripe_error_rate",
            "--duration",
            "420",
            "--policy",
            "primary-only",
            "--policy",
            "switchyard",
            "--seed",
            "4",
            "--plot",
            str(plot),
        ],
    )

    assert result.exit_code == 0, result.output
    assert "stripe_error_rate, seed 4" in result.output
    lines = [line for line in result.output.splitlines() if "primary-only" in line]
    assert lines and "%" in lines[0]
    assert "switchyard" in result.output and "round-robin" not in result.output
    assert "requests/s" in result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_markdown_and_retries_option() -> None:
    args = ["simulate", "stripe_error_rate", "--duration", "420", "--policy", "primary-only"]

    with_retry = runner.invoke(app, [*args, "--markdown"])
    without = runner.invoke(app, [*args, "--markdown", "--retries", "0"])

    assert with_retry.exit_code == 0 and without.exit_code == 0
    assert "| policy | success | first try |" in with_retry.output
    assert "1 client retry" in with_retry.output and "0 client retries" in without.output
    row = next(line for line in without.output.splitlines() if line.startswith("| primary-only"))
    success, first_try = (cell.strip() for cell in row.split("|")[2:4])
    assert success.rstrip("%")[:4] == first_try.rstrip("%")[:4]  # no retry: one attempt


def test_unknown_scenario_and_policy_exit_2() -> None:
    assert runner.invoke(app, ["simulate", "no_such_scenario"]).exit_code == 2
    bad = runner.invoke(app, ["simulate", "stripe_error_rate", "--policy", "magic"])
    assert bad.exit_code == 2 and "unknown policy magic" in bad.output


def test_a_scenario_with_a_mix_prints_its_classes_and_plots_them(tmp_path: Path) -> None:
    plot = tmp_path / "cascade.png"
    args = ["simulate", "samsara_cascade", "--duration", "360", "--policy", "switchyard"]

    result = runner.invoke(app, [*args, "--markdown", "--plot", str(plot)])

    assert result.exit_code == 0, result.output
    assert "| policy | CRITICAL success | HIGH success | NORMAL success | LOW success |" in (
        result.output
    )
    assert "| shed | retries refused | out of budget | budget left |" in result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_consumer_the_catalog_lacks_exits_2_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "stranger.yaml"
    path.write_text(
        "name: stranger\ntitle: Stranger\nservice: maps\nduration_seconds: 60\n"
        "traffic: [{at: 0, rate: 1}]\nmix: [{share: 1, priority: LOW, consumer: billing}]\n"
    )

    result = runner.invoke(app, ["simulate", str(path), "--policy", "switchyard"])

    assert result.exit_code == 2
    assert "mix[0].consumer: 'billing' is not a consumer of the catalog" in result.output
