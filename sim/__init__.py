"""Virtual-time scenario simulator: the real routing/ code against simulated provider nodes.

A scenario file (sim/scenarios/*.yaml) says how one service's nodes behave over time; the
engine replays the same seeded traffic through each routing policy (Switchyard and the
baselines users would otherwise deploy) and reports success, cost, latency and how quickly
each policy moved off a faulty node and back. docs/SIMULATION.md describes the model.
"""
