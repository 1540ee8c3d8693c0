"""The connections' record (store.connections), on every backend: a batch added in one go,
the latest of a meter, a meter's page by time, pruning; a connection of no known meter kept
with its peer."""

from __future__ import annotations

import datetime as dt

import pytest
import pytest_twisted

from sac.errors import BadCursor, InvalidRequest
from sac.store import Connection, UnknownMeter
from sac.store.connections import MAX_ITEMS, PRUNE_ROWS
from tests.store.conftest import Backend
from tests.store.test_operations import T0, Clock, ldn, opened


def push(meter: str | None, minutes: int, **kw: object) -> Connection:
    values: dict = dict(peer="192.0.2.7", kind="push", outcome="stored", duration_ms=40)
    values.update(kw)
    return Connection(meter, T0 + dt.timedelta(minutes=minutes), **values)


@pytest_twisted.ensureDeferred
async def test_a_batch_is_stored_and_read_back_newest_first(backend: Backend) -> None:
    store = await opened(backend, meters=2)
    poll = push(
        ldn(1),
        3,
        kind="poll",
        peer="10.0.0.9:4059",
        outcome="partial",
        duration_ms=2300,
        read=("daily_profile", "event_log"),
        skipped=("valve_state: object-undefined",),
    )
    added = await store.connections.add(
        [
            push(ldn(0), 1),
            poll,
            push(ldn(0), 2, outcome="commands", read=("billing_snapshot",)),
            push(None, 4, peer="198.51.100.3", outcome="push-timeout", detail="limit reached"),
            push("FIOunknownmeter1", 5, outcome="unidentified", detail="no meter FIO..."),
        ]
    )
    assert added == 5
    first = await store.connections.recent(ldn(0))
    assert [(c.started, c.outcome) for c in first] == [
        (T0 + dt.timedelta(minutes=2), "commands"),
        (T0 + dt.timedelta(minutes=1), "stored"),
    ]
    assert first[0].read == ("billing_snapshot",) and first[0].skipped == ()
    assert first[0].ldn == ldn(0) and first[0].kind == "push" and first[0].detail is None
    assert await store.connections.recent(ldn(1)) == [poll]
    assert len(await store.connections.recent(ldn(0), limit=1)) == 1
    # the connections of no known meter are kept, with their peer and why
    rows = backend.raw(
        "SELECT peer, outcome, detail FROM connections WHERE meter_id IS NULL ORDER BY started"
    )
    assert rows == [
        ("198.51.100.3", "push-timeout", "limit reached"),
        ("192.0.2.7", "unidentified", "no meter FIO..."),
    ]
    with pytest.raises(UnknownMeter):
        await store.connections.recent("FIOunknownmeter1")
    assert await store.connections.add([]) == 0


@pytest_twisted.ensureDeferred
async def test_what_comes_from_outside_is_cut_to_size(backend: Backend) -> None:
    store = await opened(backend, meters=1)
    many = tuple(f"object {i}: " + "x" * 400 for i in range(MAX_ITEMS + 5))
    await store.connections.add([push(ldn(0), 1, skipped=many, detail="y" * 5000)])
    (kept,) = await store.connections.recent(ldn(0))
    assert len(kept.skipped) == MAX_ITEMS + 1 and kept.skipped[-1] == "\u2026 and 5 more"
    assert max(len(s) for s in kept.skipped) == 300 and kept.skipped[0].endswith("\u2026")
    assert kept.detail is not None and len(kept.detail) == 2000
    with pytest.raises(ValueError, match="push or a poll"):
        await store.connections.add([push(ldn(0), 1, kind="dial")])


@pytest_twisted.ensureDeferred
async def test_a_meters_connections_page_by_time(backend: Backend) -> None:
    store = await opened(backend, meters=2)
    await store.connections.add([push(ldn(0), m) for m in range(10)] + [push(ldn(1), 5)])
    start, end = T0 + dt.timedelta(minutes=2), T0 + dt.timedelta(minutes=9)
    seen: list[dt.datetime] = []
    cursor = None
    for _ in range(5):
        page = await store.connections.page(ldn(0), start, end, cursor=cursor, limit=3)
        seen += [c.started for c in page.connections]
        cursor = page.cursor
        if cursor is None:
            break
    assert seen == [T0 + dt.timedelta(minutes=m) for m in range(2, 9)]
    other = await store.connections.page(ldn(1), start, end, cursor=None, limit=3)
    assert [c.ldn for c in other.connections] == [ldn(1)] and other.cursor is None
    first = await store.connections.page(ldn(0), start, end, limit=3)
    assert first.cursor is not None
    with pytest.raises(BadCursor):  # a cursor of another range
        await store.connections.page(ldn(0), T0, end, cursor=first.cursor, limit=3)
    with pytest.raises(BadCursor):
        await store.connections.page(ldn(0), start, end, cursor="garbage!", limit=3)
    with pytest.raises(InvalidRequest):
        await store.connections.page(ldn(0), end, start)
    with pytest.raises(UnknownMeter):
        await store.connections.page("FIOunknownmeter1", start, end)


@pytest_twisted.ensureDeferred
async def test_pruning_forgets_the_old_connections_only(backend: Backend) -> None:
    clock = Clock()
    store = await opened(backend, meters=1, clock=clock)
    old = [push(ldn(0), -60 * 24 * 10 - 1 - i) for i in range(PRUNE_ROWS + 2)]
    await store.connections.add([*old, push(ldn(0), -5), push(None, -60 * 24 * 11)])
    assert await store.connections.prune(dt.timedelta(days=10)) == PRUNE_ROWS + 3
    assert [c.started for c in await store.connections.recent(ldn(0))] == [
        T0 - dt.timedelta(minutes=5)
    ]
    assert await store.connections.prune(dt.timedelta(days=10)) == 0


@pytest_twisted.ensureDeferred
async def test_a_deleted_meter_takes_its_connections_along(backend: Backend) -> None:
    store = await opened(backend, meters=1)
    await store.connections.add([push(ldn(0), 1)])
    await store.meters.delete(ldn(0), purge=True)
    assert backend.raw("SELECT count(*) FROM connections") == [(0,)]
