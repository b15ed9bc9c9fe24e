"""The outbox hands out event ids in commit order, so `id > last seen` never skips an event."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from events_support import commit_events, drafts, head
from sqlalchemy import Engine, delete, select, text
from sqlalchemy.orm import Session, sessionmaker

from store.db import transaction
from store.events import events_since, publish, publish_many
from store.models import Event, EventLogHead


@pytest.fixture
def store(clean_store: Engine, sessions: sessionmaker[Session]) -> Iterator[sessionmaker[Session]]:
    """A clean store's session factory."""
    yield sessions


def _types(sessions: sessionmaker[Session]) -> list[tuple[int, str]]:
    with sessions() as session:
        return [(e.id, e.event_type) for e in session.scalars(select(Event).order_by(Event.id))]


def test_ids_follow_commit_order_not_start_order(
    store: sessionmaker[Session], engine: Engine
) -> None:
    """Transaction A starts and publishes first, B commits first: B's event gets the lower id,
    and a reader that saw B's event and resumes after it still finds A's."""
    if engine.dialect.name != "postgresql":
        pytest.skip("needs two concurrent writers (SQLite runs one writer at a time)")
    with store() as first, store() as second:
        first.begin()
        publish(first, "started_first", {})
        first.execute(text("SELECT 1"))  # A is under way: it holds a snapshot and its event
        second.begin()
        publish(second, "started_second", {})
        second.commit()
        with store() as reader:
            seen = events_since(reader, 0)
        assert [e.event_type for e in seen] == ["started_second"]
        resume_after = seen[-1].id
        first.commit()
    with store() as reader:
        later = events_since(reader, resume_after)
    assert [e.event_type for e in later] == ["started_first"]
    assert _types(store) == [(resume_after, "started_second"), (resume_after + 1, "started_first")]


def test_the_counter_row_holds_the_next_publisher_until_commit(
    store: sessionmaker[Session], engine: Engine
) -> None:
    """While one transaction is committing its events, another that publishes waits for it."""
    if engine.dialect.name != "postgresql":
        pytest.skip("needs two concurrent writers (SQLite runs one writer at a time)")
    warmup = commit_events(store, drafts(1, "warmup"))  # the counter row exists from here
    second_done = threading.Event()
    with store() as first:
        first.begin()
        publish(first, "holder", {})
        first.flush()
        # Take the counter the way the commit hook does, without committing yet.
        first.execute(text("UPDATE event_log_head SET last = last WHERE id = 1"))

        def second_writer() -> None:
            commit_events(store, drafts(1, "waiter"))
            second_done.set()

        thread = threading.Thread(target=second_writer)
        thread.start()
        assert not second_done.wait(0.5), "the second publisher did not wait for the lock"
        first.commit()
        thread.join(timeout=10)
    assert second_done.is_set()
    assert _types(store) == [
        (warmup[0], "warmup"),
        (warmup[0] + 1, "holder"),
        (warmup[0] + 2, "waiter"),
    ]


def test_concurrent_writers_and_a_resuming_reader_see_every_event_once(
    store: sessionmaker[Session],
) -> None:
    """Writers commit in parallel while a reader pages with `since`: it sees each id once."""
    writers, per_writer = 4, 40
    done = threading.Event()
    seen: list[int] = []

    def write(worker: int) -> None:
        for n in range(per_writer):
            commit_events(store, drafts(1 + n % 3, "load", worker=worker))

    def read() -> None:
        last = 0
        while True:
            finished = done.is_set()
            with store() as session:
                page = events_since(session, last, limit=50)
            seen.extend(e.id for e in page)
            if page:
                last = page[-1].id
            elif finished:
                return

    reader = threading.Thread(target=read)
    reader.start()
    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    reader.join(timeout=60)
    expected = sum(1 + n % 3 for n in range(per_writer)) * writers
    assert len(seen) == expected
    assert seen == sorted(set(seen))
    assert seen == list(range(seen[0], seen[0] + expected))


def test_publish_many_writes_consecutive_ids_at_commit(store: sessionmaker[Session]) -> None:
    batch = drafts(5, "bulk", service="stripe")
    with transaction(store) as session:
        publish_many(session, batch)
        assert all(d.id is None for d in batch)  # nothing is written before the commit
        assert session.scalar(select(Event.id).limit(1)) is None
    first = batch[0].id
    assert first is not None
    ids = [d.id for d in batch]
    assert ids == list(range(first, first + 5))
    with store() as session:
        rows = events_since(session, 0)
    assert [(r.id, r.payload["n"], r.service) for r in rows] == [
        (i, n, "stripe") for n, i in enumerate(ids)
    ]
    assert rows[0].payload["eventType"] == "bulk" and rows[0].payload["timestamp"].endswith("Z")


def test_a_rolled_back_transaction_publishes_nothing(store: sessionmaker[Session]) -> None:
    with pytest.raises(RuntimeError), transaction(store) as session:
        publish(session, "doomed", {})
        raise RuntimeError("change refused")
    # The same session object may be used again: nothing of the failed transaction lingers.
    with store() as session:
        session.begin()
        publish(session, "doomed", {})
        session.rollback()
        session.begin()
        publish(session, "kept", {})
        session.commit()
    assert [t for _, t in _types(store)] == ["kept"]


def test_a_rolled_back_savepoint_drops_only_its_events(store: sessionmaker[Session]) -> None:
    with transaction(store) as session:
        publish(session, "outer_before", {})
        with pytest.raises(RuntimeError), session.begin_nested():
            publish(session, "inner_failed", {})
            raise RuntimeError("one decision refused")
        with session.begin_nested():
            publish(session, "inner_kept", {})
        publish(session, "outer_after", {})
    assert [t for _, t in _types(store)] == ["outer_before", "inner_kept", "outer_after"]


def test_committing_with_a_savepoint_open_still_writes(store: sessionmaker[Session]) -> None:
    with store() as session:
        root = session.begin()
        publish(session, "outer", {})
        session.begin_nested()
        publish(session, "inner", {})
        root.commit()  # the open savepoint is released as part of the commit
    assert [t for _, t in _types(store)] == ["outer", "inner"]


def test_a_missing_counter_row_restarts_after_the_newest_event(
    store: sessionmaker[Session],
) -> None:
    first = commit_events(store, drafts(3))
    with transaction(store) as session:
        session.execute(delete(EventLogHead))
    again = commit_events(store, drafts(2))
    assert again == [first[-1] + 1, first[-1] + 2]
    assert head(store) == first[-1] + 2


def test_events_since_filters_and_stops_at_until(store: sessionmaker[Session]) -> None:
    commit_events(store, drafts(2, "alpha", service="stripe"))
    commit_events(store, drafts(2, "beta", service="twilio"))
    commit_events(store, drafts(2, "alpha", service="twilio"))
    with store() as session:
        alpha = events_since(session, 0, types=frozenset({"alpha"}))
        twilio = events_since(session, 0, service="twilio")
        both = events_since(session, 0, types=frozenset({"alpha"}), service="twilio")
        early = events_since(session, 0, until=alpha[1].id)
    assert [(e.event_type, e.service) for e in alpha] == [("alpha", "stripe")] * 2 + [
        ("alpha", "twilio")
    ] * 2
    assert {e.service for e in twilio} == {"twilio"} and len(twilio) == 4
    assert [(e.event_type, e.service) for e in both] == [("alpha", "twilio")] * 2
    assert [e.id for e in early] == [alpha[0].id, alpha[1].id]


def test_postgresql_notifies_the_last_id_of_each_commit(
    store: sessionmaker[Session], engine: Engine, database_url: str
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite readers poll")
    import psycopg
    from sqlalchemy.engine import make_url

    conninfo = make_url(database_url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(conninfo, autocommit=True) as listener:
        listener.execute("LISTEN switchyard_events")
        ids = commit_events(store, drafts(3))
        payloads = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
    assert payloads == [str(ids[-1])]
