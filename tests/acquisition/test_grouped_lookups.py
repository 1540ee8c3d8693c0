"""Issue 23, part 2: the cold path grouped.  A meter pushes once a day, so nearly every push
is of a meter no cache holds; the pushes of concurrent sessions are identified together,
one statement for the meters and keys of all that came in while the previous lookup ran
(:class:`sac.services.directory.MeterDirectory`, :meth:`sac.store.meters.IMeters.
for_pushes`), outside any transaction, and the ingest that follows looks no meter id up."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, DeferredList

from sac.errors import StoreUnavailable
from sac.store import NewMeter
from tests.acquisition.conftest import Sac, make_fleet, provision, push_once, started
from tests.store.conftest import Backend


async def _outcomes(sac: Sac, titles: list[bytes]) -> list[Any]:
    """meter_of of every title, asked in one reactor turn: (meter, keys) or the error."""
    calls = [
        Deferred.fromCoroutine(sac.acquisition.directory.meter_of(t, "127.0.0.1")) for t in titles
    ]
    results = await DeferredList(calls, consumeErrors=True)
    return [value[:2] if ok else value.value for ok, value in results]


@pytest_twisted.ensureDeferred
async def test_fifty_cold_pushes_are_identified_in_three_statements(
    backend: Backend, sacs: list[Sac]
) -> None:
    store, fleet, sac, _ = await started(backend, sacs, 50)
    lookups = sac.acquisition.directory.lookups
    store.meter_ids.clear()

    found = await _outcomes(sac, [m.system_title for m in fleet.meters])

    # two lookups start at once (one title each); the 48 that came meanwhile go together
    assert lookups.groups == 3
    for meter, (row, keys) in zip(fleet.meters, found, strict=True):
        assert (row.ldn, row.system_title) == (meter.ldn, meter.system_title)
        assert (keys.ek, keys.ak) == (meter.key, meter.key)
    # the ingest path learnt every id: it will look none up
    assert {m.ldn for m in fleet.meters} <= store.meter_ids.keys()
    # and the cache has them: a second round asks the store nothing
    await _outcomes(sac, [m.system_title for m in fleet.meters])
    assert lookups.groups == 3


@pytest_twisted.ensureDeferred
async def test_each_push_of_a_group_gets_its_own_answer(backend: Backend, sacs: list[Sac]) -> None:
    """An unknown title, a meter without keys, a meter whose only keys are another client's
    and a good one, in one group: each refused (or found) for itself."""
    store = backend.make()
    await store.open()
    fleet = make_fleet(4)
    good, keyless, public_only, _ = fleet.meters
    await provision(store, make_fleet(1, first_serial=700))  # (keys imported: a master key)
    for m in (good, keyless, public_only):
        await store.meters.add(
            NewMeter(m.ldn, system_title=m.system_title, profile=fleet.profile.name)
        )
    await store.keys.set(good.ldn, 1, good.key)
    await store.keys.set(public_only.ldn, 16, public_only.key)
    sac = Sac(store)
    sacs.append(sac)
    stranger = b"XYZ\x00\x01\x02\x03\x04"

    found = await _outcomes(
        sac, [stranger, stranger, keyless.system_title, public_only.system_title]
    )
    found.append((await _outcomes(sac, [good.system_title]))[0])

    assert [getattr(f, "reason", None) for f in found] == [
        "unknown-meter",
        "unknown-meter",
        "no-key",
        "no-key",
        None,
    ]
    assert found[-1][1].ek == good.key


@pytest_twisted.ensureDeferred
async def test_a_failed_lookup_fails_each_push_of_its_group(
    backend: Backend, sacs: list[Sac], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, fleet, sac, _ = await started(backend, sacs, 5)

    async def broken(*_: Any) -> Any:
        raise RuntimeError("the server went away")

    monkeypatch.setattr(store.meters, "for_pushes", broken)
    found = await _outcomes(sac, [m.system_title for m in fleet.meters])
    assert all(isinstance(f, StoreUnavailable) for f in found), found
    assert "the server went away" in str(found[0])
    monkeypatch.undo()
    # nothing stuck: the next lookups run
    found = await _outcomes(sac, [m.system_title for m in fleet.meters])
    assert not any(isinstance(f, Exception) for f in found)


@pytest_twisted.ensureDeferred
async def test_concurrent_cold_sessions_are_stored(backend: Backend, sacs: list[Sac]) -> None:
    """End to end over TCP: 40 meters never seen push at once; every one is stored, with
    fewer lookups than sessions."""
    store, fleet, sac, port = await started(backend, sacs, 40)
    sessions = [Deferred.fromCoroutine(push_once(port, m)) for m in fleet.meters]
    await DeferredList(sessions, fireOnOneErrback=True)
    assert sac.acquisition.metrics.value("sac_push_stored_total") == 40
    assert sac.acquisition.directory.lookups.groups < 40
    for m in fleet.meters:
        assert (await store.meters.get(m.ldn)).last_connection is not None


@pytest_twisted.ensureDeferred
async def test_a_damaged_key_refuses_its_meter_alone(backend: Backend, sacs: list[Sac]) -> None:
    """A wrapped key that does not open (damaged on disk) refuses that meter's push
    (``bad-key``); the other pushes looked up with it are found."""
    _store, fleet, sac, _ = await started(backend, sacs, 3)
    damaged = fleet.meters[1]
    # another meter's key put in its place: bound to that meter, it does not open here
    backend.raw(
        "UPDATE meter_keys SET wrapped = (SELECT k.wrapped FROM meter_keys k JOIN meters m"
        f" ON m.id = k.meter_id WHERE m.ldn = '{fleet.meters[0].ldn}' AND k.role = 'ek')"
        f" WHERE role = 'ek' AND meter_id = (SELECT id FROM meters WHERE ldn = '{damaged.ldn}')"
    )
    found = await _outcomes(sac, [m.system_title for m in fleet.meters])
    assert [getattr(f, "reason", None) for f in found] == [None, "bad-key", None]
    assert damaged.ldn in str(found[1])
