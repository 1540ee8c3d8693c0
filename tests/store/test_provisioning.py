"""The store for other systems: meters added in bulk (all or none), changed and deleted;
readings and events exported in resumable pages; API tokens -- on every backend."""

from __future__ import annotations

import datetime as dt
import random

import pytest
import pytest_twisted

from sac.dlms import Obis
from sac.store import (
    BulkError,
    Conflict,
    Event,
    Ingest,
    MeterQuery,
    MeterState,
    MeterStatus,
    NewMeter,
    Reading,
    Role,
    UnknownMeter,
)
from tests.store.conftest import Backend
from tests.store.test_operations import ALICE, FAST, T0, Clock, ldn

INDEX = Obis("7.0.13.2.0.255")
OTHER = Obis("7.0.43.45.0.255")
LOGBOOK = Obis("7.0.99.98.0.255")
EK, AK = bytes(range(16)), bytes(range(16, 32))


async def opened(backend: Backend, **kw: object):
    store = backend.make(password_params=FAST, **kw)
    await store.open()
    return store


def title(i: int) -> bytes:
    return bytes([0x2F, 0x19, 0, 0, 0, 0, 1, i])


# --- bulk add -----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_bulk_add_names_every_bad_item_and_adds_none(backend: Backend) -> None:
    store = await opened(backend)
    await store.meters.add(NewMeter(ldn(0), system_title=title(0)))
    batch = [
        (NewMeter(ldn(1), system_title=title(1)), {1: (EK, AK)}),  # good
        (NewMeter(ldn(0)), {}),  # #1: LDN held already
        (NewMeter(ldn(2), system_title=title(0)), {}),  # #2: system title held already
        (NewMeter(ldn(1)), {}),  # #3: LDN of #0
        (NewMeter(ldn(3), system_title=title(1)), {}),  # #4: system title of #0
        (NewMeter(ldn(4)), {1: (EK[:15], None)}),  # #5: a short key
        (NewMeter(ldn(5)), {1: (EK, None)}),  # good
    ]
    with pytest.raises(BulkError) as refused:
        await store.meters.add_many(batch, ALICE)
    assert refused.value.errors == {
        1: f"a meter with LDN {ldn(0)} is already present",
        2: f"meter {ldn(0)} already has this system title",
        3: f"LDN {ldn(1)} is also item #0",
        4: "the system title is also item #0",
        5: "the EK must be 16 bytes",
    }
    assert "5 of the items are refused (#1: a meter with LDN" in str(refused.value)
    assert (await store.meters.count()) == 1
    assert await store.keys.get(ldn(1), 1) is None
    with pytest.raises(BulkError):  # checking only refuses the same way
        await store.meters.add_many(batch, ALICE, check_only=True)
    good = [batch[0], batch[6]]
    assert await store.meters.add_many(good, ALICE, check_only=True) == []
    assert await store.meters.count() == 1  # checked, not added, not audited
    assert "add meters" not in [e.action for e in await store.audit.log()]
    added = await store.meters.add_many(good, ALICE)
    assert [m.ldn for m in added] == [ldn(1), ldn(5)]
    assert (await store.keys.get(ldn(1), 1)).ak == AK
    assert (await store.keys.get(ldn(5), 1)).ak == EK  # AK = EK
    assert await store.keys.has(ldn(1), 1) and not await store.keys.has(ldn(0), 1)
    assert backend.raw("SELECT count(*) FROM meter_keys") == [(4,)]  # EK and AK of two meters
    [line] = [e for e in await store.audit.log() if e.action == "add meters"]
    assert (line.actor, line.detail) == ("alice", "2 meters")


@pytest_twisted.ensureDeferred
async def test_a_large_bulk_add_is_one_transaction(backend: Backend) -> None:
    store = await opened(backend)
    batch = [(NewMeter(ldn(i), system_title=title(i % 250)), {}) for i in range(600)]
    with pytest.raises(BulkError) as refused:
        await store.meters.add_many(batch)
    assert sorted(refused.value.errors) == list(range(250, 600))  # titles repeat from #250
    assert await store.meters.count() == 0
    await store.meters.add_many([(NewMeter(ldn(i)), {}) for i in range(600)])
    assert await store.meters.count() == 600


# --- change and delete --------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_meter_is_changed_field_by_field(backend: Backend) -> None:
    clock = Clock()
    store = await opened(backend, clock=clock)
    await store.meters.add(NewMeter(ldn(0), pdr="01234567890123", system_title=title(0)))
    await store.meters.add(NewMeter(ldn(1), system_title=title(1)))
    clock.advance(hours=1)
    changed = await store.meters.update(
        ldn(0),
        {"pdr": "99999999999999", "allowed_ips": ["10.0.0.1", "10.0.0.2"], "address": None},
        ALICE,
    )
    assert changed.pdr == "99999999999999" and changed.allowed_ips == ("10.0.0.1", "10.0.0.2")
    assert changed.system_title == title(0) and changed.updated == clock.now
    assert (await store.meters.get(ldn(0))) == changed
    disabled = await store.meters.update(ldn(0), {"state": "disabled"})
    assert disabled.state is MeterState.DISABLED
    with pytest.raises(Conflict, match=f"meter {ldn(1)} already has this system title"):
        await store.meters.update(ldn(0), {"system_title": title(1)})
    assert (await store.meters.update(ldn(0), {"system_title": title(0)})).system_title == title(0)
    for changes, message in (
        ({"ldn": "X"}, "no meter field ldn"),
        ({"poll_interval": 5}, "poll interval"),
        ({"system_title": b"short"}, "8 bytes"),
        ({"state": "broken"}, "broken"),
    ):
        with pytest.raises(ValueError, match=message):
            await store.meters.update(ldn(0), changes)
    with pytest.raises(UnknownMeter):
        await store.meters.update(ldn(9), {"pdr": "1"})
    [line] = [e for e in await store.audit.log() if e.action == "update meter"][-1:]
    assert (line.actor, line.target, line.detail) == ("alice", ldn(0), "address, allowed_ips, pdr")


@pytest_twisted.ensureDeferred
async def test_a_meter_with_history_is_deleted_only_with_purge(backend: Backend) -> None:
    store = await opened(backend)
    for i in range(2):
        await store.meters.add(NewMeter(ldn(i)), keys={1: (EK, AK)})
    await store.readings.add([Reading(ldn(0), INDEX, 2, 5, T0, "poll", T0)])
    with pytest.raises(Conflict, match="has readings or events"):
        await store.meters.delete(ldn(0), ALICE)
    assert await store.meters.get(ldn(0)) is not None
    await store.meters.delete(ldn(1), ALICE)  # no history: goes
    await store.meters.delete(ldn(0), ALICE, purge=True)
    assert await store.meters.count() == 0 and await store.readings.count() == 0
    assert backend.raw("SELECT count(*) FROM meter_keys") == [(0,)]
    with pytest.raises(UnknownMeter):
        await store.meters.delete(ldn(0))
    deleted = [(e.target, e.detail) for e in await store.audit.log() if e.action == "delete meter"]
    assert deleted == [(ldn(0), "with its history"), (ldn(1), None)]
    await store.meters.add(NewMeter(ldn(0)))  # the LDN is free again


@pytest_twisted.ensureDeferred
async def test_bulk_changes_and_deletes_are_all_or_nothing(backend: Backend) -> None:
    store = await opened(backend)
    for i in range(4):
        await store.meters.add(NewMeter(ldn(i), system_title=title(i)), keys={1: (EK, None)})
    await store.readings.add([Reading(ldn(3), INDEX, 2, 5, T0, "poll", T0)])
    items = [
        (ldn(0), {"pdr": "11", "keys": {1: (AK, None)}}),
        (ldn(1), {"system_title": title(2)}),  # #1: taken
        (ldn(9), {"pdr": "1"}),  # #2: unknown
        (ldn(0), {"pdr": "12"}),  # #3: twice
        (ldn(2), {"keys": {1: (EK[:3], None)}}),  # #4: short key
        (ldn(2), {"state": "disabled"}),  # #5: twice (after a refused one)
    ]
    with pytest.raises(BulkError) as refused:
        await store.meters.update_many(items, ALICE)
    assert refused.value.errors == {
        1: f"meter {ldn(2)} already has this system title",
        2: f"no meter '{ldn(9)}'",
        3: f"meter {ldn(0)} is also item #0",
        4: "the EK must be 16 bytes",
        5: f"meter {ldn(2)} is also item #4",
    }
    assert (await store.meters.get(ldn(0))).pdr is None  # #0 was rolled back
    assert await store.meters.update_many([items[0]], check_only=True) == []
    assert (await store.meters.get(ldn(0))).pdr is None  # checked only
    await store.meters.delete_many([ldn(0)], check_only=True)
    assert await store.meters.get(ldn(0)) is not None
    assert (await store.keys.get(ldn(0), 1)).ek == EK
    changed = await store.meters.update_many([items[0], (ldn(2), {"state": "disabled"})], ALICE)
    assert [m.pdr for m in changed] == ["11", None]
    assert (await store.keys.get(ldn(0), 1)).ek == AK
    assert (await store.meters.get(ldn(2))).state is MeterState.DISABLED
    with pytest.raises(BulkError) as refused:
        await store.meters.delete_many([ldn(0), ldn(3), ldn(9)], ALICE)
    assert sorted(refused.value.errors) == [1, 2] and await store.meters.count() == 4
    await store.meters.delete_many([ldn(0), ldn(3)], ALICE, purge=True)
    assert await store.meters.count() == 2 and await store.readings.count() == 0


@pytest_twisted.ensureDeferred
async def test_the_list_keeps_meters_changed_since(backend: Backend) -> None:
    clock = Clock()
    store = await opened(backend, clock=clock)
    for i in range(3):
        await store.meters.add(NewMeter(ldn(i)))
    clock.advance(hours=1)
    since = clock.now
    await store.meters.update(ldn(1), {"pdr": "1"})
    # meter 2 is heard from with new list values
    status = MeterStatus(ldn(2), connected=since, at=since, diagnostic=0, battery_value=300)
    await store.readings.ingest(Ingest(statuses=[status]))
    page = await store.meters.page(query=MeterQuery(changed_since=since))
    assert [m.ldn for m in page.meters] == [ldn(1), ldn(2)] and page.total == 2


# --- exports ------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_readings_export_in_pages_every_reading_once(backend: Backend) -> None:
    store = await opened(backend)
    for i in range(4):
        await store.meters.add(NewMeter(ldn(i)))
    rng = random.Random(7)
    readings = []
    for i in (2, 0, 3):  # meter 1 has none
        for h in rng.sample(range(200), 40):
            at = T0 + dt.timedelta(hours=h)
            readings.append(Reading(ldn(i), INDEX, 2, 1000 * i + h, at, "poll", at, -3, 14))
            readings.append(Reading(ldn(i), OTHER, 2, h, at, "poll", at))
    # two readings captured at the same time (an index read twice, with other attributes)
    readings.append(Reading(ldn(0), INDEX, 3, 7, T0, "poll", T0))
    await store.readings.add(readings)
    start, end = T0, T0 + dt.timedelta(hours=150)

    async def export(**kw: object) -> tuple[list[Reading], int]:
        got, cursor, pages = [], None, 0
        while True:
            page = await store.exports.readings(start, end, cursor=cursor, **kw)
            got += page.readings
            pages += 1
            if page.cursor is None:
                return got, pages
            cursor = page.cursor

    def expected(**match: object) -> list[Reading]:
        kept = [
            r
            for r in readings
            if start <= r.captured < end
            and all(getattr(r, k) == v for k, v in match.items() if v is not None)
        ]
        return sorted(kept, key=lambda r: (r.ldn, r.captured, str(r.obis), r.attribute))

    def key(r: Reading) -> tuple[object, ...]:
        return (r.ldn, r.captured, str(r.obis), r.attribute)

    everything, pages = await export(limit=7)
    assert sorted(everything, key=key) == expected() and len(everything) == len(expected())
    assert [(r.ldn, r.captured) for r in everything] == sorted(
        (r.ldn, r.captured) for r in everything
    )  # per meter, in time
    assert pages == -(-len(everything) // 7)  # no empty last page
    index, _ = await export(obis=INDEX, attribute=2, limit=10)
    assert index == expected(obis=INDEX, attribute=2)
    one, _ = await export(ldn=ldn(3), obis=INDEX, attribute=2, limit=1000)
    assert one == expected(ldn=ldn(3), obis=INDEX, attribute=2)
    assert (await store.exports.readings(start, end, ldn=ldn(1))).readings == ()
    with pytest.raises(UnknownMeter):
        await store.exports.readings(start, end, ldn=ldn(9))
    # a cursor resumes the same query only; and bad ranges and sizes are refused
    first = await store.exports.readings(start, end, obis=INDEX, attribute=2, limit=5)
    with pytest.raises(ValueError, match="another query"):
        await store.exports.readings(start, end + dt.timedelta(hours=1), cursor=first.cursor)
    for bad in ("", "nonsense", first.cursor[:-3] + "AAA", "ZXw"):
        with pytest.raises(ValueError):
            await store.exports.readings(start, end, obis=INDEX, attribute=2, cursor=bad)
    for kw in ({"limit": 0}, {"limit": 10_001}):
        with pytest.raises(ValueError):
            await store.exports.readings(start, end, **kw)
    with pytest.raises(ValueError, match="ends before"):
        await store.exports.readings(end, start)
    with pytest.raises(ValueError, match="UTC offset"):
        await store.exports.readings(start.replace(tzinfo=None), end)
    # readings stored meanwhile after the cursor's place are in the next pages, not before
    later = T0 + dt.timedelta(hours=149, minutes=30)
    await store.readings.add([Reading(ldn(3), INDEX, 2, 1, later, "poll", later)])
    rest, cursor = [], first.cursor
    while cursor is not None:
        page = await store.exports.readings(start, end, obis=INDEX, attribute=2, cursor=cursor)
        rest += page.readings
        cursor = page.cursor
    assert rest[-1].captured == later and len(first.readings) + len(rest) == len(index) + 1


@pytest_twisted.ensureDeferred
async def test_events_export_in_time_order(backend: Backend) -> None:
    store = await opened(backend)
    for i in range(3):
        await store.meters.add(NewMeter(ldn(i)))
    events = [
        Event(ldn(i % 3), LOGBOOK, 10 + i % 5, T0 + dt.timedelta(minutes=i // 2), T0, "poll", i)
        for i in range(60)
    ]
    await store.readings.ingest(Ingest(events=events))
    start, end = T0, T0 + dt.timedelta(minutes=25)
    got, cursor = [], None
    while True:
        page = await store.exports.events(start, end, cursor=cursor, limit=4)
        got += page.events
        if page.cursor is None:
            break
        cursor = page.cursor
    kept = [e for e in events if e.occurred < end]

    def key(e: Event) -> tuple[object, ...]:
        return (e.ldn, e.code, e.occurred, e.counter)

    assert [key(e) for e in sorted(got, key=lambda e: e.counter)] == [key(e) for e in kept]
    assert [e.occurred for e in got] == sorted(e.occurred for e in kept)
    one = await store.exports.events(start, end, ldn=ldn(1), limit=1000)
    assert sorted(e.counter for e in one.events) == [e.counter for e in kept if e.ldn == ldn(1)]
    with pytest.raises(ValueError, match="another query"):
        await store.exports.events(start, end, ldn=ldn(1), cursor=cursor or page.cursor or "x")


# --- API tokens ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_an_api_token_acts_as_its_user_until_revoked(backend: Backend) -> None:
    clock = Clock()
    store = await opened(backend, clock=clock)
    await store.users.add("erp", "a long password", Role.VIEWER)
    secret, token = await store.tokens.create("erp", "billing export", ALICE)
    assert secret.startswith("sac_") and len(secret) > 40
    assert (token.name, token.user.name, token.user.role) == ("billing export", "erp", Role.VIEWER)
    stored = backend.raw("SELECT token_hash FROM api_tokens")
    assert secret.encode() not in bytes(stored[0][0]) and len(bytes(stored[0][0])) == 32
    found = await store.tokens.get(secret)
    assert found is not None and found.id == token.id and found.user.name == "erp"
    assert (await store.tokens.all())[0].last_used == clock.now
    clock.advance(seconds=30)
    await store.tokens.get(secret)
    assert (await store.tokens.all())[0].last_used == T0  # not written at every call
    clock.advance(seconds=30)
    await store.tokens.get(secret)
    assert (await store.tokens.all())[0].last_used == clock.now
    assert await store.tokens.get(secret + "x") is None
    assert await store.tokens.get("") is None
    await store.users.update("erp", active=False)
    assert await store.tokens.get(secret) is None  # a disabled user's tokens stop
    await store.users.update("erp", active=True)
    assert await store.tokens.get(secret) is not None
    await store.tokens.revoke(token.id, ALICE)
    assert await store.tokens.get(secret) is None
    assert (await store.tokens.all())[0].revoked == clock.now
    await store.tokens.revoke(token.id)  # twice: still revoked, no error
    with pytest.raises(KeyError):
        await store.tokens.revoke(999)
    with pytest.raises(ValueError):
        await store.tokens.create("erp", "")
    actions = [(e.action, e.target) for e in await store.audit.log() if e.actor == "alice"]
    assert actions == [("revoke API token", f"#{token.id}"), ("create API token", "erp")]
