"""The one store suite, run on every backend (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, gatherResults
from zope.interface.verify import verifyObject

from sac.dlms import Obis
from sac.errors import (
    BadCursor,
    ConfigurationError,
    InvalidRequest,
    SacError,
    StorageError,
    UnknownToken,
)
from sac.keys import MasterKey, new_master_key
from sac.store import (
    Conflict,
    IStore,
    KeyImportError,
    MeterQuery,
    MeterState,
    NewMeter,
    Reading,
    UnknownMeter,
)
from sac.store.audit import IAudit
from sac.store.commands import ICommands
from sac.store.counters import ICounters
from sac.store.events import IEvents
from sac.store.exports import IExports
from sac.store.keycsv import SAMPLE, KeyRow, parse_key_csv
from sac.store.keys import IKeys
from sac.store.meters import IMeters
from sac.store.readings import IReadings
from sac.store.schema import load_migrations
from sac.store.tokens import ITokens
from sac.store.users import ISessions, IUsers
from tests.store.conftest import MASTER, Backend

LDN = "FIO0000012345678"
LATEST = len(load_migrations("sqlite"))
TITLE = bytes.fromhex("2f19229199164103")
KEYC = bytes.fromhex("4d5944554d4d59474c4f42414c4b4559")
AK = bytes(range(16))


COMPONENTS = {
    "meters": IMeters,
    "keys": IKeys,
    "counters": ICounters,
    "readings": IReadings,
    "events": IEvents,
    "commands": ICommands,
    "users": IUsers,
    "sessions": ISessions,
    "tokens": ITokens,
    "audit": IAudit,
    "exports": IExports,
}


def fixed_clock() -> dt.datetime:
    return dt.datetime(2026, 11, 21, 8, 0, tzinfo=dt.UTC)


@pytest_twisted.ensureDeferred
async def test_schema_is_created_then_kept_and_a_newer_one_refused(backend: Backend) -> None:
    store = backend.make()
    verifyObject(IStore, store)
    for component, interface in COMPONENTS.items():
        verifyObject(interface, getattr(store, component))
    assert await store.open() == (0, LATEST)
    await store.close()
    again = backend.make()
    assert await again.open() == (LATEST, LATEST)
    await again.close()
    backend.raw("INSERT INTO schema_version (version, name, applied) VALUES (99, 'future', 'x')")
    newer = backend.make()
    with pytest.raises(StorageError, match="schema version 99, newer than this sac"):
        await newer.open()


@pytest_twisted.ensureDeferred
async def test_meters(backend: Backend) -> None:
    store = backend.make(clock=fixed_clock)
    await store.open()
    meter = await store.meters.add(
        NewMeter(LDN, pdr="01234567890123", system_title=TITLE, allowed_ips=("10.0.0.1", "::1"))
    )
    assert meter.ldn == LDN and meter.system_title == TITLE and meter.state is MeterState.ACTIVE
    assert meter.allowed_ips == ("10.0.0.1", "::1") and meter.created == fixed_clock()
    assert await store.meters.get(LDN) == meter
    assert await store.meters.by_system_title(TITLE) == meter
    assert await store.meters.get("FIO0000000000000") is None
    assert await store.meters.by_system_title(b"\x00" * 8) is None
    with pytest.raises(Conflict, match="LDN"):
        await store.meters.add(NewMeter(LDN))
    with pytest.raises(Conflict, match="system title"):
        await store.meters.add(NewMeter("FIO0000000000001", system_title=TITLE))
    await store.meters.set_state(LDN, MeterState.DISABLED)
    assert (await store.meters.get(LDN)).state is MeterState.DISABLED
    with pytest.raises(UnknownMeter):
        await store.meters.set_state("FIO0000000000002", MeterState.ACTIVE)
    with pytest.raises(ValueError):
        NewMeter("too short")


@pytest_twisted.ensureDeferred
async def test_each_transaction_is_timed_by_name_failures_included(backend: Backend) -> None:
    """``Store.observe`` (the histogram ``sac_store_seconds``) is told every transaction's
    name and duration, on each backend, a refused one too."""
    store = backend.make(clock=fixed_clock)
    timed: list[tuple[str, float]] = []
    store.observe = lambda name, seconds: timed.append((name, seconds))
    await store.open()
    assert [name for name, _ in timed] == ["migrate", "check_master_key"]
    await store.meters.add(NewMeter(LDN))
    with pytest.raises(Conflict):
        await store.meters.add(NewMeter(LDN))
    names = [name for name, _ in timed[2:]]
    assert len(names) == 2 and names[0] == names[1] and names[0] != "?"
    assert all(0 <= seconds < 30 for _, seconds in timed)


@pytest_twisted.ensureDeferred
async def test_keys_are_wrapped_at_rest(backend: Backend) -> None:
    store = backend.make()
    await store.open()
    await store.meters.add(NewMeter(LDN, system_title=TITLE))
    await store.keys.set(LDN, 1, KEYC)
    keys = await store.keys.get(LDN, 1)
    assert keys.ek == keys.ak == KEYC and KEYC.hex() not in repr(keys)
    await store.keys.set(LDN, 1, KEYC, AK)
    assert (await store.keys.get(LDN, 1)).ak == AK
    assert await store.keys.get(LDN, 16) is None
    for (blob,) in backend.raw("SELECT wrapped FROM meter_keys"):
        assert KEYC not in bytes(blob) and AK not in bytes(blob)
    with pytest.raises(UnknownMeter):
        await store.keys.set("FIO0000000000009", 1, KEYC)
    with pytest.raises(ValueError, match="16 bytes"):
        await store.keys.set(LDN, 1, KEYC[:15])


@pytest_twisted.ensureDeferred
async def test_a_store_with_keys_needs_its_master_key(backend: Backend) -> None:
    store = backend.make()
    await store.open()
    await store.meters.add(NewMeter(LDN))
    await store.keys.set(LDN, 1, KEYC)
    await store.close()
    with pytest.raises(ConfigurationError, match=f"master key {MASTER.id_hex}: set SAC_MASTER"):
        await backend.make(master=None).open()
    other = MasterKey.from_text(new_master_key())
    with pytest.raises(ConfigurationError, match=f"configured one is {other.id_hex}"):
        await backend.make(master=other).open()
    store = backend.make()
    await store.open()
    assert await store.keys.rotate_master(other) == 2  # EK and AK
    assert (await store.keys.get(LDN, 1)).ek == KEYC
    await store.close()
    with pytest.raises(ConfigurationError):
        await backend.make().open()  # the old master key no longer opens it
    rotated = backend.make(master=other)
    await rotated.open()
    assert (await rotated.keys.get(LDN, 1)).ek == KEYC


@pytest_twisted.ensureDeferred
async def test_our_invocation_counters_never_repeat(backend: Backend) -> None:
    store = backend.make()
    await store.open()
    await store.meters.add(NewMeter(LDN))
    assert await store.counters.reserve(LDN, 1) == 1
    assert await store.counters.reserve(LDN, 1) == 2
    assert await store.counters.reserve(LDN, 1, count=10) == 3
    assert (await store.counters.last(LDN, 1))[0] == 12
    await store.close()
    restarted = backend.make()  # a restart continues where the store left off
    await restarted.open()
    assert await restarted.counters.reserve(LDN, 1) == 13
    await restarted.counters.raise_ours(LDN, 1, used=1000)  # the meter's frame counter
    assert await restarted.counters.reserve(LDN, 1) == 1001
    await restarted.counters.raise_ours(LDN, 1, used=5)  # never goes back
    assert await restarted.counters.reserve(LDN, 1) == 1002
    firsts = await gatherResults(
        [Deferred.fromCoroutine(restarted.counters.reserve(LDN, 1)) for _ in range(30)]
    )
    assert len(set(firsts)) == 30 and min(firsts) == 1003
    assert await restarted.counters.last(LDN, 16) == (0, None)
    with pytest.raises(UnknownMeter):
        await restarted.counters.reserve("FIO0000000000009", 1)


@pytest_twisted.ensureDeferred
async def test_the_meters_counters_only_move_forward(backend: Backend) -> None:
    store = backend.make()
    await store.open()
    await store.meters.add(NewMeter(LDN))
    assert await store.counters.accept_theirs(LDN, 1, 485)
    assert not await store.counters.accept_theirs(LDN, 1, 485)  # a replay
    assert not await store.counters.accept_theirs(LDN, 1, 484)
    assert await store.counters.accept_theirs(LDN, 1, 486)
    assert await store.counters.last(LDN, 1) == (0, 486)
    assert await store.counters.accept_theirs(LDN, 16, 1)  # each client has its own


@pytest_twisted.ensureDeferred
async def test_an_older_database_upgrades_in_place(backend: Backend) -> None:
    store = backend.make(clock=fixed_clock)
    assert await store.open(upto=2) == (0, 2)  # the database as version 2 left it
    await store.close()
    # version 2's rows, written as version 2 wrote them; a load profile read twice
    title = "X'2f19229199164103'" if backend.kind == "sqlite" else "'\\x2f19229199164103'"
    backend.raw(
        "INSERT INTO meters (ldn, system_title, profile, created, updated)"
        f" VALUES ('{LDN}', {title}, 'p', '2026-11-01T00:00:00+00:00', '2026-11-01T00:00:00+00:00')"
    )
    for value in (5, 5, 6):
        backend.raw(
            "INSERT INTO readings (meter_id, obis, attribute, value, captured, received, source)"
            f" VALUES (1, '7.0.13.2.0.255', 2, {value},"
            f" '2026-11-20T0{value}:00:00.000000+00:00', '2026-11-21T00:00:00+00:00', 'poll')"
        )
    upgraded = backend.make(clock=fixed_clock)
    assert await upgraded.open() == (2, LATEST)
    meter = await upgraded.meters.get(LDN)
    assert meter.system_title == TITLE and meter.index is None  # the data came along
    assert await upgraded.readings.count() == 2  # the copy read twice is gone


INDEX = Obis("7.0.13.2.0.255")
DIAGNOSTIC = Obis("7.0.96.5.1.255")


def reading(ldn: str, value: int | float | None, hour: int, **kw: object) -> Reading:
    captured = dt.datetime(2026, 11, 20, hour, tzinfo=dt.UTC)
    defaults: dict = {"scaler": -3, "unit": 14, "source": "cf47"}
    defaults.update(kw)
    obis = defaults.pop("obis", INDEX)
    return Reading(ldn, obis, 2, value, fixed_clock(), captured=captured, **defaults)


@pytest_twisted.ensureDeferred
async def test_readings_in_batches_of_many_meters(backend: Backend) -> None:
    store = backend.make(clock=fixed_clock)
    await store.open()
    ldns = [f"FIO{i:013d}" for i in range(30)]
    for ldn in ldns:
        await store.meters.add(NewMeter(ldn))
    batch = [reading(ldn, 1000 * i + h, h) for i, ldn in enumerate(ldns) for h in range(24)]
    batch.append(reading(ldns[0], None, 12, obis=DIAGNOSTIC, raw=b"\x12\x14\x80", scaler=None))
    batch.append(reading(ldns[1], 21.5, 12, obis=Obis("7.0.41.0.0.255"), scaler=0, unit=9))
    assert await store.readings.add(batch) == 24 * 30 + 2
    assert await store.readings.count() == 24 * 30 + 2
    last = await store.readings.last(ldns[2], INDEX, limit=3)
    assert [r.value for r in last] == [2023, 2022, 2021]
    assert last[0].captured == dt.datetime(2026, 11, 20, 23, tzinfo=dt.UTC)
    assert last[0].scaled == Decimal("2.023") and last[0].unit == 14 and last[0].source == "cf47"
    [diag] = await store.readings.last(ldns[0], DIAGNOSTIC)
    assert diag.value is None and diag.raw == b"\x12\x14\x80"
    [temperature] = await store.readings.last(ldns[1], Obis("7.0.41.0.0.255"))
    assert temperature.value == 21.5 and isinstance(temperature.value, float)
    with pytest.raises(UnknownMeter):  # all or none: one unknown meter stores nothing
        await store.readings.add([reading(ldns[0], 1, 1), reading("FIO9999999999999", 1, 1)])
    assert await store.readings.count() == 24 * 30 + 2
    assert await store.readings.add([]) == 0
    big = 2**63 - 1  # long64 values keep every digit
    await store.readings.add([reading(ldns[3], big, 5, obis=Obis("0.0.96.8.0.255"))])
    assert (await store.readings.last(ldns[3], Obis("0.0.96.8.0.255")))[0].value == big


@pytest_twisted.ensureDeferred
async def test_key_import_is_all_or_nothing(backend: Backend) -> None:
    store = backend.make()
    await store.open()
    for ldn in ("FIO0000012345678", "FIO0000012345679"):
        await store.meters.add(NewMeter(ldn))
    rows, errors = parse_key_csv(SAMPLE)
    assert errors == []
    assert await store.keys.import_rows(rows) == 2
    assert (await store.keys.get("FIO0000012345679", 1)).ak == bytes(range(0xD0, 0xE0))
    # again: already present, nothing written; with replace: written
    with pytest.raises(KeyImportError) as info:
        await store.keys.import_rows(rows)
    assert [e.line for e in info.value.errors] == [2, 3]
    assert "has keys already" in str(info.value)
    assert await store.keys.import_rows(rows, replace=True) == 2
    more, _ = parse_key_csv(SAMPLE.replace("FIO0000012345679", "FIO0000099999999") + "")
    more = [KeyRow(r.line, r.ldn, 16, r.ek, r.ak) for r in more]  # Public client keys
    with pytest.raises(KeyImportError, match="line 3: no meter FIO0000099999999"):
        await store.keys.import_rows(more)
    assert await store.keys.get("FIO0000012345678", 16) is None  # the good line was not written


@pytest_twisted.ensureDeferred
async def test_refusals_are_named_in_the_one_exception_tree(backend: Backend) -> None:
    """What the store's rules refuse is a SacError a caller catches by meaning, and still
    the ValueError or KeyError callers caught before."""
    store = backend.make()
    await store.open()
    try:
        with pytest.raises(InvalidRequest) as small:
            await store.meters.page(limit=0)
        assert isinstance(small.value, SacError) and isinstance(small.value, ValueError)
        with pytest.raises(BadCursor):
            await store.meters.page(after="not a cursor", query=MeterQuery(sort="pdr"))
        with pytest.raises(BadCursor):
            await store.exports.readings(
                dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                dt.datetime(2026, 1, 2, tzinfo=dt.UTC),
                cursor="nonsense",
            )
        with pytest.raises(InvalidRequest):
            await store.meters.add(NewMeter(LDN), keys={1: (b"short", None)})
        with pytest.raises(UnknownToken) as gone:
            await store.tokens.revoke(12345)
        assert isinstance(gone.value, KeyError)
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_the_profiles_of_a_page_of_meters_in_one_query(backend: Backend) -> None:
    store = backend.make(clock=fixed_clock)
    await store.open()
    await store.meters.add(NewMeter(LDN, profile="fiorentini"))
    await store.meters.add(NewMeter("FIO0000000000009"))
    found = await store.meters.profiles([LDN, "FIO0000000000009", "FIO0000000000042", LDN])
    assert found == {LDN: "fiorentini", "FIO0000000000009": "uni-ts-11291-12-2"}
    assert await store.meters.profiles([]) == {}
