"""CPU time the scenario simulator spends per simulated request, for one policy.

Run from the repository root: ``python -m bench.bench_sim [--scenario NAME] [--policy P]``.
Prints the median over ``--repeats`` runs of CPU time (``time.process_time``, so other
processes on the host weigh less than on wall time) per simulated request. Compare two
commits by running it in each checkout alternately, on the same host.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    # Run as a file: make the repository root importable like ``python -m`` does.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.engine import Engine
from sim.runner import ABLATIONS, POLICIES, scenario_catalog
from sim.scenario import load_scenario
from sim.world import World


def cpu_per_request(scenario_name: str, policy: str, duration: float, seed: int) -> float:
    """Microseconds of CPU per simulated request of one run (the world built beforehand)."""
    scenario = load_scenario(scenario_name).truncated(duration)
    world = World(scenario, scenario_catalog(scenario), seed)
    nodes = world.nodes()
    chosen = {**POLICIES, **ABLATIONS}[policy](world, nodes)
    started = time.process_time()
    Engine(world, chosen, nodes).run()
    return (time.process_time() - started) * 1e6 / max(1, len(world.arrivals))


def main() -> int:
    """Print the median CPU time per simulated request."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="stripe_error_rate")
    parser.add_argument("--policy", default="switchyard")
    parser.add_argument("--duration", type=float, default=900.0, help="seconds simulated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    runs = [
        cpu_per_request(args.scenario, args.policy, args.duration, args.seed)
        for _ in range(args.repeats)
    ]
    print(
        f"{args.scenario} {args.policy}: {statistics.median(runs):.1f} µs CPU per simulated "
        f"request (median of {args.repeats}; runs {', '.join(f'{r:.1f}' for r in runs)})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
