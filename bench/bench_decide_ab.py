"""bench_decide on two checkouts in one run, alternated: the before/after table of a change.

Run from the repository root (the "after" tree), with the "before" commit checked out
elsewhere, e.g. ``git worktree add --detach /tmp/decide-before <commit>``:

    python -m bench.bench_decide_ab --before /tmp/decide-before [--rounds 3] [-- --fresh]

This tree's bench/bench_decide.py is copied over the before tree's (so both time the same
way), then the two run one after the other ``--rounds`` times with the same interpreter; the
table gives each side's median p50 and p99 and the ratio before / after of the p50.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^\| (\d+) \| ([\d.]+) \| ([\d.]+) \|$")


def run(tree: Path, options: list[str]) -> dict[int, tuple[float, float]]:
    """{nodes: (p50, p99)} from one bench_decide run in ``tree``."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.bench_decide", *options],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    rows = (ROW.match(line) for line in done.stdout.splitlines())
    return {int(m[1]): (float(m[2]), float(m[3])) for m in rows if m}


def main() -> None:
    """Print the alternated before/after table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--before", type=Path, required=True, help="checkout of the before commit")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("options", nargs="*", help="passed on to bench_decide (after --)")
    args = parser.parse_args()
    shutil.copyfile(ROOT / "bench" / "bench_decide.py", args.before / "bench" / "bench_decide.py")
    before: list[dict[int, tuple[float, float]]] = []
    after: list[dict[int, tuple[float, float]]] = []
    for _ in range(args.rounds):
        before.append(run(args.before, args.options))
        after.append(run(ROOT, args.options))
    print(f"bench_decide {' '.join(args.options)}: median of {args.rounds} alternated runs\n")
    print("| nodes | p50 before (µs) | p50 after (µs) | p99 before | p99 after | before / after |")
    print("|---:|---:|---:|---:|---:|---:|")
    for size in sorted(after[0]):
        b50 = statistics.median(r[size][0] for r in before)
        a50 = statistics.median(r[size][0] for r in after)
        b99 = statistics.median(r[size][1] for r in before)
        a99 = statistics.median(r[size][1] for r in after)
        print(f"| {size} | {b50:.1f} | {a50:.1f} | {b99:.1f} | {a99:.1f} | {b50 / a50:.2f} |")


if __name__ == "__main__":
    main()
