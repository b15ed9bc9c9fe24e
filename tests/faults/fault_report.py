"""Verdicts and figures of fault-test runs: each test writes one JSON file; the table of them.

Tests write to $SWITCHYARD_FAULTS_REPORT_DIR (set by `make test-faults`) when it is set.
`python tests/faults/fault_report.py DIR` prints the Markdown table of docs/RELIABILITY.md.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPORT_DIR = "SWITCHYARD_FAULTS_REPORT_DIR"


@dataclass
class Verdict:
    """Problems found (must be none) and the figures of the run."""

    problems: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def expect(self, ok: bool, problem: str) -> None:
        """Record `problem` unless `ok`."""
        if not ok:
            self.problems.append(problem)

    def assert_clean(self) -> None:
        """Fail with every problem found."""
        shown = "\n".join(self.problems[:40])
        assert not self.problems, f"{len(self.problems)} invariant violations:\n{shown}"


def record(name: str, verdict: Verdict) -> None:
    """Print the figures and problems; when a report directory is set, write them as JSON."""
    figures = {
        **verdict.figures,
        "violations": len(verdict.problems),
        "problems": verdict.problems[:20],
    }
    text = json.dumps(figures, indent=2, sort_keys=True, default=str)
    print(f"\n--- fault figures: {name}\n{text}")
    directory = os.environ.get(REPORT_DIR)
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / f"{name}.json").write_text(text + "\n")


def _answers(figures: dict[str, Any]) -> str:
    answers = figures.get("load", {}).get("answers", {})
    return ", ".join(f"{status}: {n}" for status, n in answers.items()) or "-"


def table(directory: Path) -> str:
    """One Markdown row per recorded fault."""
    lines = [
        "| fault | requests | answers by status | lost | duplicated | violations "
        "| time to recover |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for path in sorted(directory.glob("*.json")):
        figures = json.loads(path.read_text())
        requests = sum(figures.get("load", {}).get("requests", {}).values())
        recover = figures.get("recovered_seconds")
        lines.append(
            f"| {path.stem} | {requests} | {_answers(figures)} | {figures.get('lost', '?')} "
            f"| {figures.get('duplicated', '?')} | {figures.get('violations', '?')} "
            f"| {'-' if recover is None else f'{recover:.2f} s'} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(Path(sys.argv[1] if len(sys.argv) > 1 else os.environ[REPORT_DIR])))
