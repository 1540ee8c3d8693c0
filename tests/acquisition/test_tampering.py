"""Replay and tampering: pushes an attacker could make from what the wire shows (or from
another meter's key) are refused, counted by reason, and store nothing -- not a reading,
not a last connection, not a counter that would lock the real meter out.

The byte-for-byte replay and a wrong key in the store are in ``test_faults.py``; these are
the frames an attacker *builds*."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone

from sac.store import MeterState
from tests.acquisition.conftest import Backend, Sac, make_fleet, provision, started
from tests.acquisition.test_faults import Raw, push_bytes, rejected


async def send_from(source: str, port: int, data: bytes) -> Any:
    """``data`` to the SAC on 127.0.0.1 from the loopback address ``source``."""
    protocol = Raw(data)
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, bindAddress=(source, 0))
    await connectProtocol(endpoint, protocol)
    [reason] = await protocol.ended
    return reason


def later(meter: Any) -> bytes:
    """A push of ``meter`` an hour after its last one: new readings, if it were stored."""
    meter.clock_offset += 3600
    return push_bytes(meter)


async def nothing_stored(store: Any, ldn: str) -> None:
    assert await store.readings.count() == 0
    assert (await store.meters.get(ldn)).last_connection is None
    assert await store.counters.last(ldn, 1) == (0, None)


@pytest_twisted.ensureDeferred
async def test_a_push_reciphered_with_another_meters_key_is_refused(
    backend: Backend, sacs: list[Sac]
) -> None:
    """The attacker owns meter B (its key) and forges a push in meter A's name: A's system
    title, B's key.  And the other way round: B's genuine push with A's title put in."""
    store, fleet, sac, port = await started(backend, sacs, count=2)
    a, b = fleet.meters
    own_key = a.key
    a.key = b.key
    forged = push_bytes(a)
    a.key = own_key
    assert not (await send_raw_to(port, forged)).check(ConnectionDone)
    assert rejected(sac, "bad-tag") == 1
    # B's genuine frame with its system title swapped for A's (the nonce changes: no tag)
    genuine = push_bytes(b)
    assert genuine.count(b.system_title) == 1
    swapped = genuine.replace(b.system_title, a.system_title)
    assert not (await send_raw_to(port, swapped)).check(ConnectionDone)
    assert rejected(sac, "bad-tag") == 2
    for m in (a, b):
        await nothing_stored(store, m.ldn)
    # A's own push still goes through: nothing was learnt from the forgeries
    assert (await send_raw_to(port, push_bytes(a))).check(ConnectionDone)
    assert await store.readings.count() > 0


@pytest_twisted.ensureDeferred
async def test_a_fresh_push_with_an_old_invocation_counter_is_refused(
    backend: Backend, sacs: list[Sac]
) -> None:
    """Not a copy of old bytes: a new frame, rightly ciphered (the key leaked, or the meter
    was reset), whose counter is not above the last one accepted."""
    store, fleet, sac, port = await started(backend, sacs)
    [m] = fleet.meters
    for _ in range(3):
        assert (await send_raw_to(port, push_bytes(m))).check(ConnectionDone)
    last = m.our_counter - 1
    assert await store.counters.last(m.ldn, 1) == (0, last)
    stored = await store.readings.count()
    connected = (await store.meters.get(m.ldn)).last_connection
    for old in (last, last - 1, 0):
        m.our_counter = old
        assert not (await send_raw_to(port, later(m))).check(ConnectionDone)
    assert rejected(sac, "replay") == 3
    assert await store.readings.count() == stored
    assert (await store.meters.get(m.ldn)).last_connection == connected
    assert await store.counters.last(m.ldn, 1) == (0, last)
    # a second process without the cache is refused by the store's transaction as well
    other = Sac(store, cache_seconds=0)
    sacs.append(other)
    m.our_counter = last
    assert not (await send_raw_to(await other.listen(), later(m))).check(ConnectionDone)
    assert rejected(other, "replay") == 1
    # the meter's next counter is fine
    m.our_counter = last + 1
    assert (await send_raw_to(port, later(m))).check(ConnectionDone)
    assert await store.readings.count() > stored
    assert await store.counters.last(m.ldn, 1) == (0, last + 1)


@pytest_twisted.ensureDeferred
async def test_a_known_system_title_from_a_new_address_is_refused_by_the_allowlist(
    backend: Backend, sacs: list[Sac]
) -> None:
    """The meter may call only from 127.0.0.2.  Its genuine frame, captured and sent first
    from 127.0.0.3, is refused there -- and does not use up its counter, so the meter's own
    delivery from 127.0.0.2 is still stored."""
    store = backend.make()
    await store.open()
    fleet = make_fleet(2)
    await provision(store, fleet)
    m, free = fleet.meters
    await store.meters.update(m.ldn, {"allowed_ips": ("127.0.0.2",)})
    sac = Sac(store)
    sacs.append(sac)
    port = await sac.listen()
    frame = push_bytes(m)
    assert not (await send_from("127.0.0.3", port, frame)).check(ConnectionDone)
    assert rejected(sac, "ip-not-allowed") == 1
    await nothing_stored(store, m.ldn)
    assert (await send_from("127.0.0.2", port, frame)).check(ConnectionDone)
    stored = await store.readings.count()
    assert stored > 0
    # known and cached now: the next one from a new address is refused the same
    assert not (await send_from("127.0.0.3", port, later(m))).check(ConnectionDone)
    assert rejected(sac, "ip-not-allowed") == 2
    assert await store.readings.count() == stored
    # a meter without an allowlist may call from anywhere
    assert (await send_from("127.0.0.3", port, push_bytes(free))).check(ConnectionDone)


@pytest_twisted.ensureDeferred
async def test_an_unciphered_push_in_a_known_meters_name_is_refused(
    backend: Backend, sacs: list[Sac]
) -> None:
    """A plain DATA-NOTIFICATION carries no proof of who sent it: never stored."""
    from sac.dlms.axdr import OctetString
    from sac.dlms.xdlms import DataNotification

    store, fleet, sac, port = await started(backend, sacs)
    [m] = fleet.meters
    template = m.profile.push_templates[0]
    plain = DataNotification(1, None, OctetString(m.compact_buffer(template))).to_bytes()
    wrapped = (1).to_bytes(2, "big") * 3 + len(plain).to_bytes(2, "big") + plain
    assert not (await send_raw_to(port, wrapped)).check(ConnectionDone)
    assert rejected(sac, "unciphered") == 1
    await nothing_stored(store, m.ldn)


@pytest_twisted.ensureDeferred
async def test_a_push_for_a_disabled_meter_is_refused(backend: Backend, sacs: list[Sac]) -> None:
    store, fleet, sac, port = await started(backend, sacs)
    [m] = fleet.meters
    await store.meters.set_state(m.ldn, MeterState.DISABLED)
    assert not (await send_raw_to(port, push_bytes(m))).check(ConnectionDone)
    assert rejected(sac, "disabled") == 1
    await nothing_stored(store, m.ldn)


async def send_raw_to(port: int, data: bytes) -> Any:
    return await send_from("127.0.0.1", port, data)
