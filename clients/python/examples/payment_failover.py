"""Route simulated payments through Switchyard to two local fake Stripe nodes; one fails.

Start Switchyard (`make run` in the repository), then:

    TOKEN=$(.venv/bin/switchyard token --role operator --sub payment-example)
    python clients/python/examples/payment_failover.py --token "$TOKEN"

Two fake providers listen on local ports, one per node of the `stripe` service. After
`--fail-after` payments the primary answers 503 to every charge: each payment that Switchyard
sends there fails, is reported, and is retried on the secondary; once five failures in a row
have been reported, the primary's breaker opens and Switchyard stops sending payments to it.
Without Switchyard running, the same payments go through, decided locally.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from switchyard_client import Attempt, Hooks, Switchyard, attempts_of

PRIMARY = "stripe_primary_us_east"
SECONDARY = "stripe_secondary_us_west"


class FakeProvider(ThreadingHTTPServer):
    """A payment provider on a local port: POST /charges answers 200, or 503 once failing."""

    def __init__(self, name: str) -> None:
        super().__init__(("127.0.0.1", 0), _ChargeHandler)
        self.name = name
        self.failing = False
        self.charges = 0

    @property
    def url(self) -> str:
        """Where the provider listens."""
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ChargeHandler(BaseHTTPRequestHandler):
    server: FakeProvider

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.charges += 1
        status, body = (
            (503, {"error": "card processor unavailable"})
            if self.server.failing
            else (
                200,
                {"id": f"ch_{self.server.charges}", "status": "succeeded"},
            )
        )
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *_: object) -> None:  # quiet: the example prints its own account
        pass


@contextmanager
def serving(*providers: FakeProvider) -> Iterator[None]:
    """Run the fake providers in threads for the duration."""
    threads = [threading.Thread(target=p.serve_forever, daemon=True) for p in providers]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        for provider in providers:
            provider.shutdown()
            provider.server_close()


def charge(
    provider: FakeProvider, http: httpx.Client
) -> Callable[[dict[str, object]], httpx.Response]:
    """The handler for one node: POST the charge to its provider."""

    def send(order: dict[str, object]) -> httpx.Response:
        return http.post(provider.url + "/charges", json=order, timeout=2.0)

    return send


def describe(attempts: list[Attempt]) -> str:
    """One payment's attempts, e.g. `primary failed (503) -> secondary ok`."""
    steps = []
    for attempt in attempts:
        outcome = "ok" if attempt.error is None else f"failed ({_short(attempt.error)})"
        local = " [decided locally]" if attempt.decided_locally else ""
        steps.append(f"{attempt.node_id} {outcome}{local}")
    return " -> ".join(steps)


def _short(error: BaseException) -> str:
    code = getattr(error, "error_code", None)
    return str(code) if code else type(error).__name__


def main(argv: list[str] | None = None) -> int:
    """Run the payments and print what happened; 0 when every payment was paid."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--switchyard", default=os.environ.get("SWITCHYARD_URL", "http://127.0.0.1:3000")
    )
    parser.add_argument("--token", default=os.environ.get("SWITCHYARD_TOKEN", ""))
    parser.add_argument("--payments", type=int, default=40)
    parser.add_argument("--fail-after", type=int, default=10)
    parser.add_argument("--pause", type=float, default=0.05, help="seconds between payments")
    parser.add_argument(
        "--decision-deadline",
        type=float,
        default=0.25,
        help="seconds a decision may wait for Switchyard before the client decides locally",
    )
    args = parser.parse_args(argv)

    primary, secondary = FakeProvider(PRIMARY), FakeProvider(SECONDARY)
    attempts: list[Attempt] = []
    paid = 0
    print(f"Switchyard at {args.switchyard}")
    print(f"fake providers: {PRIMARY} at {primary.url}, {SECONDARY} at {secondary.url}")
    print(f"{PRIMARY} starts failing after payment {args.fail_after}\n")
    with (
        serving(primary, secondary),
        httpx.Client() as http,
        Switchyard(
            args.switchyard,
            args.token,
            report_interval=0.2,  # the example is short: let health move within it
            decision_deadline=args.decision_deadline,
            hooks=Hooks(on_attempt=attempts.append),
        ) as switchyard,
    ):
        handlers = {PRIMARY: charge(primary, http), SECONDARY: charge(secondary, http)}
        for number in range(1, args.payments + 1):
            primary.failing = number > args.fail_after
            attempts.clear()
            order = {"amount": 4200, "currency": "usd", "order": f"order-{number}"}
            try:
                switchyard.call(
                    "stripe", "payment_processing", handlers, order, priority="CRITICAL"
                )
                paid += 1
                print(f"payment {number:3d}  {describe(attempts)}")
            except Exception as error:  # every node failed: the caller's own error handling
                print(f"payment {number:3d}  {describe(list(attempts_of(error)))}  NOT PAID")
            time.sleep(args.pause)
        switchyard.flush(timeout=5.0)
        counters = switchyard.counters.snapshot()
        print(
            f"\n{paid} of {args.payments} payments paid; {counters['retries']} retried, "
            f"{counters['local_decisions']} decided locally; {counters['reports_sent']} outcomes "
            f"reported, {counters['reports_dropped']} dropped"
        )
        print(f"charges seen: {PRIMARY} {primary.charges}, {SECONDARY} {secondary.charges}")
        _print_breaker(switchyard)
    return 0 if paid == args.payments else 1


def _print_breaker(switchyard: Switchyard) -> None:
    copy = switchyard.catalog
    if copy is None:
        print("no catalog copy: Switchyard was not reachable")
        return
    for node in copy.services.get("stripe", ()):
        if node.node_id in (PRIMARY, SECONDARY):
            print(
                f"{node.node_id}: breaker {node.breaker_state}, health {node.health_score:.1f}, "
                f"success rate {node.success_rate:.1f} %"
            )


if __name__ == "__main__":
    sys.exit(main())
