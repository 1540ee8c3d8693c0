"""The store for the operators' web application -- the sorted and filtered meter list, meters
added with their keys, readings between two times, sign-in lock-out and web sessions -- on
every backend."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass

import pytest
import pytest_twisted

from sac.dlms import Obis
from sac.errors import ConfigurationError
from sac.keys import MasterKey
from sac.passwords import hash_password
from sac.store import (
    Conflict,
    Ingest,
    MeterKeys,
    MeterQuery,
    MeterState,
    MeterStatus,
    NewMeter,
    Reading,
    Role,
    UnknownMeter,
    UnknownUser,
)
from sac.store import users as store_users
from sac.store.schema import load_migrations
from sac.store.users import LOCKOUT, LOCKOUT_FAILURES
from tests.store.conftest import Backend
from tests.store.test_operations import ALICE, FAST, T0, Clock, ldn

INDEX = Obis("7.0.13.2.0.255")
EK, AK = bytes(range(16)), bytes(range(16, 32))
PASSWORD = "correct horse battery"
SORTS = ("ldn", "pdr", "index", "diagnostic", "battery", "last_connection", "valve")


async def opened(backend: Backend, **kw: object):
    store = backend.make(password_params=FAST, **kw)
    await store.open()
    return store


# --- the meter list -----------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """What the test fleet's meter holds, for the list as Python computes it."""

    ldn: str
    pdr: str | None
    state: MeterState
    index: int | float | None
    diagnostic: int | None
    battery: int | None
    last_connection: dt.datetime | None
    valve: int | None

    def value(self, sort: str) -> object:
        return getattr(self, sort)


def fleet_rows(count: int = 23) -> list[Row]:
    """Ties and NULLs in every column, in no order the LDNs share."""
    rows = []
    for i in range(count):
        hours = i % 3
        rows.append(
            Row(
                ldn=ldn((i * 7) % count),
                pdr=None if i % 5 == 0 else f"{(i * 3) % 4:014d}",
                state=MeterState.DISABLED if i % 8 == 3 else MeterState.ACTIVE,
                index=None if i % 4 == 1 else (i % 3) * 1000 + (0.5 if i % 2 else 0),
                diagnostic=None if i % 6 == 2 else i % 3,
                battery=None if i % 3 == 0 else (i * 5) % 4 * 100,
                last_connection=None if i % 4 == 0 else T0 - dt.timedelta(hours=hours),
                valve=None if i % 7 == 3 else i % 3,
            )
        )
    return rows


async def fleet(store, rows: list[Row]) -> None:
    statuses = []
    for row in rows:
        await store.meters.add(NewMeter(row.ldn, pdr=row.pdr))
        if row.state is MeterState.DISABLED:
            await store.meters.set_state(row.ldn, row.state)
        index = None
        if row.index is not None:
            index = Reading(row.ldn, INDEX, 2, row.index, T0, "cf47", T0, -3, 14)
        statuses.append(
            MeterStatus(
                row.ldn,
                connected=row.last_connection,
                at=T0,
                index=index,
                diagnostic=row.diagnostic,
                battery_value=row.battery,
                valve_state=row.valve,
            )
        )
    await store.readings.ingest(Ingest(statuses=statuses))


def matches(row: Row, query: MeterQuery) -> bool:
    search = query.search or ""
    return (
        (row.ldn.startswith(search) or (row.pdr or "\x00").startswith(search))
        and query.state in (None, row.state)
        and query.valve in (None, row.valve)
        and (not query.alarms or bool(row.diagnostic))
        and (
            query.unseen_since is None
            or row.last_connection is None
            or row.last_connection < query.unseen_since
        )
    )


def expected(rows: list[Row], query: MeterQuery) -> list[str]:
    """The LDNs the list should show, in order: by (value, LDN), NULLs last either way."""
    kept = [r for r in rows if matches(r, query)]
    valued = [r for r in kept if r.value(query.sort) is not None]
    nulls = [r for r in kept if r.value(query.sort) is None]
    valued.sort(key=lambda r: (r.value(query.sort), r.ldn), reverse=query.descending)
    nulls.sort(key=lambda r: r.ldn, reverse=query.descending)
    return [r.ldn for r in valued + nulls]


async def every_page(store, query: MeterQuery, limit: int) -> list[str]:
    """Every page of the list, concatenated; each page full but the last."""
    seen: list[str] = []
    after = None
    for _ in range(100):  # a cursor that went back would page for ever
        page = await store.meters.page(after=after, limit=limit, query=query)
        seen += [m.ldn for m in page.meters]
        if page.next_after is None:
            assert len(page.meters) <= limit
            return seen
        assert len(page.meters) == limit
        after = page.next_after
    raise AssertionError(f"no end to the pages of {query}: {seen[:60]}")


@pytest_twisted.ensureDeferred
async def test_the_meter_list_pages_through_every_sort_both_ways(backend: Backend) -> None:
    store = await opened(backend)
    rows = fleet_rows()
    await fleet(store, rows)
    for sort in SORTS:
        for descending in (False, True):
            query = MeterQuery(sort=sort, descending=descending)
            want = expected(rows, query)
            assert len(want) == len(rows)
            for limit in (1, 2, 3, 5, 22, 23, 50):  # pages end on ties and on the NULLs
                assert await every_page(store, query, limit) == want, (sort, descending, limit)


@pytest_twisted.ensureDeferred
async def test_the_meter_list_filters_sorts_and_counts(backend: Backend) -> None:
    store = await opened(backend)
    rows = fleet_rows()
    await fleet(store, rows)
    filters = [
        MeterQuery(),
        MeterQuery(state=MeterState.DISABLED),
        MeterQuery(search="FIO000000000001"),  # LDN prefix
        MeterQuery(search="0000000000000"),  # PDR prefix
        MeterQuery(search="00000000000001"),
        MeterQuery(search="nothing like it"),
        MeterQuery(valve=1),
        MeterQuery(alarms=True),
        MeterQuery(unseen_since=T0 - dt.timedelta(hours=1)),
        MeterQuery(unseen_since=T0 - dt.timedelta(days=1)),  # only the never heard
        MeterQuery(valve=2, alarms=True, unseen_since=T0, state=MeterState.ACTIVE),
    ]
    for base in filters:
        want = expected(rows, base)
        assert await store.meters.count(query=base) == len(want)
        page = await store.meters.page(limit=1000, query=base)
        assert [m.ldn for m in page.meters] == want and page.total == len(want)
        for sort in SORTS:  # the filters on the sort's own column keep or drop its NULLs
            for descending in (False, True):
                query = MeterQuery(
                    base.search,
                    base.state,
                    base.valve,
                    base.alarms,
                    base.unseen_since,
                    sort,
                    descending,
                )
                for limit in (1, 2):
                    assert await every_page(store, query, limit) == expected(rows, query)
    # the arguments before MeterQuery still work, and count with the same filters
    assert await store.meters.count(MeterState.DISABLED) == sum(
        r.state is MeterState.DISABLED for r in rows
    )
    assert await store.meters.count() == len(rows)
    page = await store.meters.page(state=MeterState.ACTIVE, search="FIO00000000000")
    assert page.total is None
    assert [m.ldn for m in page.meters] == expected(
        rows, MeterQuery(state=MeterState.ACTIVE, search="FIO00000000000")
    )


@pytest_twisted.ensureDeferred
async def test_meter_list_cursors(backend: Backend) -> None:
    store = await opened(backend)
    rows = fleet_rows()
    await fleet(store, rows)
    # in LDN order the cursor is the LDN, as before
    page = await store.meters.page(limit=3)
    assert page.next_after == ldn(2)
    page = await store.meters.page(after=ldn(2), limit=3, query=MeterQuery(descending=True))
    assert [m.ldn for m in page.meters] == [ldn(1), ldn(0)] and page.next_after is None
    # in another order it names the sort, the value and the LDN; a NULL is a NULL
    by_pdr = MeterQuery(sort="pdr")
    first = await store.meters.page(limit=1, query=by_pdr)
    assert json.loads(first.next_after) == ["pdr", "00000000000000", expected(rows, by_pdr)[0]]
    among_nulls = json.dumps(["pdr", None, ldn(0)])
    page = await store.meters.page(after=among_nulls, query=by_pdr)
    assert [m.ldn for m in page.meters] == expected(rows, by_pdr)[-4:]
    by_time = MeterQuery(sort="last_connection", descending=True)
    first = await store.meters.page(limit=1, query=by_time)
    assert dt.datetime.fromisoformat(json.loads(first.next_after)[1]) == T0
    bad = [
        "not json",
        "[1, 2",
        '"FIO0000000000001"',
        "[]",
        '{"sort": "pdr"}',
        json.dumps(["battery", 100, ldn(1)]),  # a cursor of another sort
        json.dumps(["last_connection", "yesterday", ldn(1)]),
        json.dumps(["last_connection", "2026-11-21T08:00:00", ldn(1)]),  # no time zone
        json.dumps(["last_connection", 3, ldn(1)]),
        json.dumps(["last_connection", T0.isoformat(), 7]),
    ]
    for cursor in bad:
        with pytest.raises(ValueError, match="cursor"):
            await store.meters.page(after=cursor, query=by_time)
    for sort, value in (("pdr", 7), ("index", "1000"), ("index", True), ("battery", 1.5)):
        with pytest.raises(ValueError, match="cursor"):
            await store.meters.page(
                after=json.dumps([sort, value, ldn(1)]), query=MeterQuery(sort=sort)
            )
    # a NULL cursor where the filters keep no NULL of the sort's column
    with pytest.raises(ValueError, match="cursor"):
        await store.meters.page(
            after=json.dumps(["valve", None, ldn(1)]), query=MeterQuery(sort="valve", valve=1)
        )
    with pytest.raises(ValueError, match="sorts by one of"):
        MeterQuery(sort="name")
    with pytest.raises(ValueError, match="1 to 1000"):
        await store.meters.page(limit=1001, query=by_time)


@pytest_twisted.ensureDeferred
async def test_connections_since(backend: Backend) -> None:
    store = await opened(backend)
    rows = fleet_rows()
    await fleet(store, rows)
    for hours in (0, 1, 2, 3, 4):
        since = T0 - dt.timedelta(hours=hours)
        heard = sum(r.last_connection is not None and r.last_connection >= since for r in rows)
        assert await store.meters.heard_since(since) == heard
    assert await store.meters.heard_since(T0 + dt.timedelta(seconds=1)) == 0


# --- meters with their keys, readings between two times -----------------------------------


@pytest_twisted.ensureDeferred
async def test_a_meter_is_added_with_its_keys_in_one_transaction(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await opened(backend)
    meter = await store.meters.add(NewMeter(ldn(0)), by=ALICE, keys={1: (EK, None), 16: (EK, AK)})
    assert meter.ldn == ldn(0)
    assert await store.keys.get(ldn(0), 1) == MeterKeys(EK, EK)  # no AK: the EK
    assert await store.keys.get(ldn(0), 16) == MeterKeys(EK, AK)
    [entry] = await store.audit.log()
    assert (entry.action, entry.target, entry.detail) == (
        "add meter",
        ldn(0),
        "keys for client 1, 16",
    )
    title = bytes(8)
    await store.meters.add(NewMeter(ldn(1), system_title=title))

    def held() -> int:
        return backend.raw("SELECT count(*) FROM meter_keys")[0][0]

    # refused: a taken LDN, a taken system title, a bad key -- no meter, no key, no audit
    with pytest.raises(Conflict):
        await store.meters.add(NewMeter(ldn(0)), by=ALICE, keys={2: (AK, None)})
    with pytest.raises(Conflict):
        await store.meters.add(NewMeter(ldn(2), system_title=title), by=ALICE, keys={1: (EK, AK)})
    with pytest.raises(ValueError, match="16 bytes"):
        await store.meters.add(NewMeter(ldn(3)), by=ALICE, keys={1: (EK, AK), 2: (EK, AK[:8])})
    assert await store.keys.get(ldn(0), 2) is None and held() == 4
    assert await store.meters.get(ldn(2)) is None and await store.meters.get(ldn(3)) is None
    assert len(await store.audit.log()) == 1
    # a key that fails to be written after the row and the first keys were: none is kept
    wrap = MasterKey.wrap
    wrapped: list[bytes] = []

    def failing(self: MasterKey, key: bytes, place: bytes) -> bytes:
        if len(wrapped) == 2:
            raise RuntimeError("the third key is lost")
        wrapped.append(place)
        return wrap(self, key, place)

    monkeypatch.setattr(MasterKey, "wrap", failing)
    with pytest.raises(RuntimeError, match="third key"):
        await store.meters.add(NewMeter(ldn(5)), by=ALICE, keys={1: (EK, AK), 2: (EK, AK)})
    monkeypatch.undo()
    assert len(wrapped) == 2 and held() == 4 and await store.meters.get(ldn(5)) is None
    assert len(await store.audit.log()) == 1
    # keys need the master key; a meter without keys does not
    keyless = backend.make(None, password_params=FAST)
    await store.close()
    backend.raw("DELETE FROM meter_keys")
    await keyless.open()
    with pytest.raises(ConfigurationError, match="master key"):
        await keyless.meters.add(NewMeter(ldn(4)), keys={1: (EK, None)})
    assert await keyless.meters.get(ldn(4)) is None
    assert (await keyless.meters.add(NewMeter(ldn(4)))).ldn == ldn(4)


def hourly(meter: str, hour: int, obis: Obis = INDEX, attribute: int = 2) -> Reading:
    captured = T0 + dt.timedelta(hours=hour)
    return Reading(meter, obis, attribute, 1000 + hour, T0, "poll", captured, -3, 14)


@pytest_twisted.ensureDeferred
async def test_readings_between_two_times(backend: Backend) -> None:
    store = await opened(backend)
    for i in range(2):
        await store.meters.add(NewMeter(ldn(i)))
    other = Obis("7.0.43.45.0.255")
    await store.readings.add(
        [hourly(ldn(0), h) for h in range(24)]
        + [hourly(ldn(1), h) for h in range(24)]  # another meter
        + [hourly(ldn(0), h, other) for h in range(24)]  # another object
        + [hourly(ldn(0), h, attribute=3) for h in range(24)]  # another attribute
        + [Reading(ldn(0), INDEX, 2, 5, T0, "push")]  # no capture time: on no time axis
    )

    async def hours(**kw: object) -> list[int]:
        found = await store.readings.between(ldn(0), INDEX, **kw)
        assert all(r.ldn == ldn(0) and r.obis == INDEX and r.attribute == 2 for r in found)
        return [int((r.captured - T0) / dt.timedelta(hours=1)) for r in found]

    def t(hour: float) -> dt.datetime:
        return T0 + dt.timedelta(hours=hour)

    assert await hours() == list(range(24))
    assert await hours(start=t(20)) == [20, 21, 22, 23]  # the start is in
    assert await hours(end=t(3)) == [0, 1, 2]  # the end is out
    assert await hours(start=t(5), end=t(8)) == [5, 6, 7]
    assert await hours(start=t(5.5), end=t(7.5)) == [6, 7]
    assert await hours(start=t(8), end=t(8)) == []
    assert await hours(start=t(5), end=t(15), limit=3) == [12, 13, 14]  # the newest, in order
    assert await hours(limit=1) == [23]
    [first] = await store.readings.between(ldn(0), INDEX, end=t(1))
    assert first == hourly(ldn(0), 0)
    assert [r.value for r in await store.readings.between(ldn(0), other, start=t(22))] == [
        1022,
        1023,
    ]
    assert await store.readings.between(ldn(1), INDEX, 3, start=t(0)) == []
    with pytest.raises(UnknownMeter):
        await store.readings.between("FIO9999999999999", INDEX)
    with pytest.raises(ValueError):
        await store.readings.between(ldn(0), INDEX, limit=0)


ROME = __import__("zoneinfo").ZoneInfo("Europe/Rome")


@pytest_twisted.ensureDeferred
async def test_reading_buckets_are_the_last_reading_of_each(backend: Backend) -> None:
    """Days in Rome across both daylight-saving changes of 2026 (29 March, 25 October: 23-
    and 25-hour days), as Python works them out from every reading; and UTC buckets."""
    store = await opened(backend)
    await store.meters.add(NewMeter(ldn(0)))
    start = dt.datetime(2026, 3, 27, 7, 30, tzinfo=dt.UTC)
    # every 20 minutes for four days around each change, and the other meter/object as noise
    times = [start + dt.timedelta(minutes=20 * i) for i in range(4 * 72)]
    autumn = dt.datetime(2026, 10, 23, 5, tzinfo=dt.UTC)
    times += [autumn + dt.timedelta(minutes=20 * i) for i in range(4 * 72)]
    readings = [
        Reading(ldn(0), INDEX, 2, 1000 + i, at, "poll", at, -3, 14) for i, at in enumerate(times)
    ]
    await store.readings.add(
        readings + [Reading(ldn(0), Obis("7.0.43.45.0.255"), 2, 1, t, "poll", t) for t in times]
    )
    end = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)

    def expected(width: int, zone: dt.tzinfo, lo: dt.datetime, hi: dt.datetime) -> list[int]:
        last: dict[object, int] = {}
        for r in readings:
            if lo <= r.captured < hi:
                local = r.captured.astimezone(zone)
                wall = local.replace(tzinfo=dt.UTC).timestamp()  # seconds on the wall clock
                last[int(wall) // width] = r.value
        return [last[k] for k in sorted(last)]

    for width, zone in ((86400, ROME), (6 * 3600, dt.UTC), (3600, ROME), (86400, dt.UTC)):
        for lo, hi in ((start, end), (start + dt.timedelta(hours=30), autumn), (autumn, end)):
            found = await store.readings.buckets(ldn(0), INDEX, 2, lo, hi, width, zone)
            assert [r.value for r in found.readings] == expected(width, zone, lo, hi), (
                width,
                zone,
                lo,
            )
            assert found.total == sum(lo <= r.captured < hi for r in readings)
    days = await store.readings.buckets(ldn(0), INDEX, 2, start, end, 86400, ROME)
    local_days = [r.captured.astimezone(ROME).date() for r in days.readings]
    assert len(set(local_days)) == len(local_days) == 10  # one a day (5 + 5), none twice
    assert (
        days.readings[0]
        == readings[[r.captured for r in readings].index(days.readings[0].captured)]
    )  # whole readings, not only values
    # 25 October has 25 hours: its last reading is at 23:40 local, 22:40 UTC
    october_25 = [r for r in days.readings if r.captured.astimezone(ROME).day == 25]
    assert october_25[0].captured == dt.datetime(2026, 10, 25, 22, 40, tzinfo=dt.UTC)
    empty = await store.readings.buckets(ldn(0), INDEX, 2, end, end + dt.timedelta(days=1), 60)
    assert empty.readings == () and empty.total == 0
    with pytest.raises(UnknownMeter):
        await store.readings.buckets("FIO9999999999999", INDEX, 2, start, end, 60)
    with pytest.raises(ValueError):
        await store.readings.buckets(ldn(0), INDEX, 2, start, end, 0)
    with pytest.raises(ValueError):
        await store.readings.buckets(ldn(0), INDEX, 2, end, start, 60)


def test_utc_offsets_find_each_change_to_the_minute() -> None:
    from sac.store.readings import utc_offsets

    year = utc_offsets(
        dt.datetime(2026, 1, 1, tzinfo=dt.UTC), dt.datetime(2027, 1, 1, tzinfo=dt.UTC), ROME
    )
    assert year == [
        (dt.datetime(2026, 1, 1, tzinfo=dt.UTC), 3600),
        (dt.datetime(2026, 3, 29, 1, tzinfo=dt.UTC), 7200),
        (dt.datetime(2026, 10, 25, 1, tzinfo=dt.UTC), 3600),
    ]
    assert utc_offsets(year[1][0], year[2][0], dt.UTC) == [(year[1][0], 0)]


# --- sign-in lock-out ---------------------------------------------------------------------


def sign_ins(entries) -> list[tuple[str, str | None, str, str | None]]:
    return [(e.actor, e.address, e.action, e.detail) for e in reversed(entries)]


@pytest_twisted.ensureDeferred
async def test_failed_sign_ins_lock_a_user_out_for_a_while(backend: Backend) -> None:
    clock = Clock()
    store = await opened(backend, clock=clock)
    root = await store.users.add("root", PASSWORD, Role.ADMIN)
    here = "198.51.100.1"

    def failures() -> tuple[int, object]:
        return backend.raw("SELECT failed_logins, locked_until FROM users")[0]

    # four failures in a row, then the right password: the count starts again
    for _ in range(LOCKOUT_FAILURES - 1):
        assert await store.users.authenticate("root", "wrong horse battery", here) is None
    assert failures() == (4, None)
    assert await store.users.authenticate("root", PASSWORD, here) == root
    assert failures() == (0, None)
    # five in a row lock the user out: the right password is refused like a wrong one, and
    # not checked (a decoy hash is)
    for _ in range(LOCKOUT_FAILURES):
        clock.advance(seconds=10)
        assert await store.users.authenticate("root", "wrong horse battery", here) is None
    locked_at = clock.now
    assert failures()[0] == 0
    assert (await store.users.all())[0].locked_until == locked_at + dt.timedelta(minutes=15)
    assert await store.users.authenticate("root", PASSWORD, here) is None
    clock.advance(minutes=14)
    assert (
        await store.users.authenticate("root", "wrong horse battery", here) is None
    )  # not counted
    clock.advance(minutes=1)  # the lock is over
    assert await store.users.authenticate("root", PASSWORD, here) == root
    assert failures()[0] == 0
    # an unknown name, a disabled user: no sign-in, and never a lock
    assert await store.users.authenticate("nobody", PASSWORD, here) is None
    await store.users.add("bob", "bob's long password", Role.VIEWER)
    await store.users.update("bob", active=False)
    for _ in range(LOCKOUT_FAILURES + 1):
        assert await store.users.authenticate("bob", "bob's long password") is None
    log = sign_ins(await store.audit.log(limit=1000))
    assert log == [
        *[("root", here, "sign-in failed", f"{n} in a row") for n in range(1, 5)],
        ("root", here, "sign-in", None),
        *[("root", here, "sign-in failed", f"{n} in a row") for n in range(1, 6)],
        ("root", here, "locked out", f"until {(locked_at + LOCKOUT).isoformat()}"),
        *[("root", here, "sign-in failed", "locked out: password not checked")] * 2,
        ("root", here, "sign-in", None),
        ("nobody", here, "sign-in failed", "no active user of this name"),
        *[("bob", None, "sign-in failed", "no active user of this name")] * 6,
    ]
    locked = [e for e in await store.audit.log() if e.action == "locked out"]
    assert locked[0].target == "root" and locked[0].at == locked_at


@pytest_twisted.ensureDeferred
async def test_an_admin_lifts_a_lock_out_with_a_new_password_or_by_enabling(
    backend: Backend,
) -> None:
    clock = Clock()
    store = await opened(backend, clock=clock)
    await store.users.add("root", PASSWORD, Role.OPERATOR)
    for lift in ({"password": "another long password"}, {"active": True}):
        for _ in range(LOCKOUT_FAILURES):
            await store.users.authenticate("root", "wrong horse battery")
        [user] = await store.users.all()
        assert user.locked_until == clock.now + LOCKOUT  # the list shows the lock
        if "active" in lift:
            # disabling keeps the lock (and ends sessions); enabling again lifts it
            assert (await store.users.update("root", active=False)).locked_until is not None
        assert (await store.users.update("root", **lift)).locked_until is None
        assert backend.raw("SELECT failed_logins FROM users") == [(0,)]
    assert await store.users.authenticate("root", "another long password") is not None


@pytest_twisted.ensureDeferred
async def test_a_lock_that_began_during_the_password_check_holds(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A right password checked while a lock-out began (by guesses sent in parallel) is
    refused like a wrong one."""
    clock = Clock()
    store = await opened(backend, clock=clock)
    await store.users.add("root", PASSWORD, Role.ADMIN)
    until = T0 + LOCKOUT
    verify = store_users.passwords.verify_password

    def locked_meanwhile(password: str, hashed: str) -> bool:
        stamp = until.isoformat(timespec="microseconds")
        backend.raw(f"UPDATE users SET locked_until = '{stamp}'")
        return verify(password, hashed)

    monkeypatch.setattr(store_users.passwords, "verify_password", locked_meanwhile)
    assert await store.users.authenticate("root", PASSWORD) is None
    [entry] = await store.audit.log()
    assert (entry.action, entry.detail) == (
        "sign-in failed",
        "locked out while the password was checked",
    )


@pytest_twisted.ensureDeferred
async def test_attempts_under_way_count_before_their_check(backend: Backend) -> None:
    """Each attempt is counted before its password is checked: with LOCKOUT_FAILURES under
    way, the next locks the user out at once and is not checked; the right password among
    those under way is refused once the lock is on."""
    clock = Clock()
    store = await opened(backend, clock=clock)
    root = await store.users.add("root", PASSWORD, Role.ADMIN)
    reserve = store_users.reserve_sign_in
    counts = [await store.run(reserve(root, ALICE, clock.now)) for _ in range(LOCKOUT_FAILURES)]
    assert counts == [1, 2, 3, 4, 5]
    assert await store.run(reserve(root, ALICE, clock.now)) is None  # the sixth: locked now
    assert (await store.users.all())[0].locked_until == clock.now + LOCKOUT
    assert await store.users.authenticate("root", PASSWORD) is None
    assert [e.action for e in reversed(await store.audit.log())] == [
        "locked out",
        "sign-in failed",
    ]


# --- web sessions -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_web_sessions(backend: Backend) -> None:
    clock = Clock()
    store = await opened(backend, clock=clock)
    root = await store.users.add("root", PASSWORD, Role.ADMIN)
    ttl = dt.timedelta(minutes=30)
    token, session = await store.sessions.create("root", ttl, "192.0.2.7")
    assert session.user == root and session.expires == T0 + ttl
    assert session.address == "192.0.2.7" and len(session.csrf) >= 43 and session.csrf != token
    # only the token's SHA-256 is stored
    [(hashed, csrf)] = backend.raw("SELECT token_hash, csrf FROM web_sessions")
    assert bytes(hashed) == hashlib.sha256(token.encode()).digest() and csrf == session.csrf
    assert await store.sessions.get(token) == session
    assert await store.sessions.get(token + "x") is None
    assert await store.sessions.get("") is None

    # sliding: extended when less than half of the ttl is left, and only with a ttl
    clock.advance(minutes=14)
    assert (await store.sessions.get(token, ttl)).expires == T0 + ttl
    clock.advance(minutes=2)  # 14 minutes left
    assert (await store.sessions.get(token)).expires == T0 + ttl
    slid = await store.sessions.get(token, ttl)
    assert slid.expires == clock.now + ttl and slid.csrf == session.csrf
    assert (await store.sessions.get(token)).expires == clock.now + ttl
    # over: at its end, not only after
    clock.advance(minutes=30)
    assert await store.sessions.get(token, ttl) is None
    # a session over is deleted when the next one is made
    clock.advance(seconds=1)
    second, _ = await store.sessions.create("root", ttl)
    assert backend.raw("SELECT count(*) FROM web_sessions")[0][0] == 1
    await store.sessions.end(second)
    assert await store.sessions.get(second) is None
    await store.sessions.end(second)  # twice: nothing more to do

    with pytest.raises(UnknownUser):
        await store.sessions.create("nobody", ttl)
    with pytest.raises(ValueError):
        await store.sessions.create("root", dt.timedelta(0))


@pytest_twisted.ensureDeferred
async def test_a_change_to_a_user_ends_its_web_sessions(backend: Backend) -> None:
    store = await opened(backend, clock=Clock())
    await store.users.add("root", PASSWORD, Role.ADMIN)
    await store.users.add("bob", "bob's long password", Role.VIEWER)
    ttl = dt.timedelta(hours=1)

    async def signed_in(name: str) -> str:
        return (await store.sessions.create(name, ttl))[0]

    root, bob = await signed_in("root"), await signed_in("bob")
    # what does not change what the session may do keeps it
    await store.users.update("bob", ALICE, role=Role.VIEWER, active=True)
    assert await store.sessions.get(bob) is not None
    for change in ({"role": Role.OPERATOR}, {"password": "bob's new password"}, {"active": False}):
        await store.users.update("bob", ALICE, **change)
        assert await store.sessions.get(bob) is None, change
        assert await store.sessions.get(root) is not None  # another user's stays
        if change != {"active": False}:
            bob = await signed_in("bob")
    with pytest.raises(UnknownUser):  # a disabled user gets no new session
        await signed_in("bob")
    # a refused change (the last admin) ends nothing
    with pytest.raises(Conflict):
        await store.users.update("root", role=Role.VIEWER)
    assert await store.sessions.get(root) is not None
    # a user disabled behind the store's back has no session either
    backend.raw("UPDATE users SET active = FALSE WHERE name = 'root'")
    assert await store.sessions.get(root) is None


def indexes(backend: Backend) -> set[str]:
    if backend.kind == "sqlite":
        sql = "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'meters'"
    else:
        sql = "SELECT indexname FROM pg_indexes WHERE tablename = 'meters'"
    return {name for (name,) in backend.raw(sql)}


@pytest_twisted.ensureDeferred
async def test_the_web_migration_keeps_the_users_and_indexes_every_sort(
    backend: Backend,
) -> None:
    old = backend.make(password_params=FAST)
    assert await old.open(upto=4) == (0, 4)
    await old.meters.add(NewMeter(ldn(0), pdr="0123"))
    await old.close()
    # a user as schema 4 held it (today's add_user reads columns that came later)
    hashed = hash_password(PASSWORD, FAST)
    backend.raw(
        "INSERT INTO users (name, password, role, active, created, updated) VALUES"
        f" ('root', '{hashed}', 'admin', TRUE, '{T0.isoformat()}', '{T0.isoformat()}')"
    )
    store = backend.make(password_params=FAST)
    assert await store.open() == (4, len(load_migrations(backend.kind)))
    assert await store.users.authenticate("root", PASSWORD) is not None
    assert [m.pdr for m in (await store.meters.page(query=MeterQuery(sort="pdr"))).meters] == [
        "0123"
    ]
    found = indexes(backend)
    for column in ("pdr", "index", "diagnostic", "battery", "valve", "last_connection"):
        assert f"meters_{column}_ldn" in found
    assert not found & {"meters_pdr", "meters_last_connection"}
