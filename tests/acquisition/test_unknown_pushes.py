"""Pushes the SAC cannot tie to one meter by its system title.

* While the store is away, a push is spooled (and acknowledged) only when it is of a meter
  this process knows -- an active meter of the store when it started, or one it has
  identified from the store since, not withdrawn by a change -- and only so many from one
  source address: random system titles were spooled and acknowledged before.
* A push without system title is tried against the keys of the meters it may come from
  (their allowlist holds its address, or they were last heard from it): two meters allowing
  one address both get their pushes stored, where before the second was refused; when
  several were candidates and none authenticates it, the refusal names no meter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.error import ConnectionDone
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport

from sac.dlms import Obis
from sac.services.spool import Spool
from sac.simulator.session import MeterProtocol
from sac.store import MeterState
from tests.acquisition.conftest import Backend, Sac, failures_logged, make_fleet, provision
from tests.acquisition.test_faults import behind_a_proxy, push_bytes, rejected
from tests.acquisition.test_tampering import later, send_from

INDEX = Obis("7.0.13.2.0.255")
REFUSALS = ("not-spooled", "unknown-meter", "disabled")


async def until(condition: Any, what: str) -> None:
    """Wait (up to 30 s: a guard against hanging, not a measure) for ``condition()``."""
    for _ in range(300):
        if condition():
            return
        await deferLater(reactor, 0.1, lambda: None)
    raise AssertionError(f"never: {what}")


@pytest_twisted.ensureDeferred
async def test_while_the_store_is_away_only_known_meters_are_spooled(
    backend: Backend, sacs: list[Sac], tmp_path: Path
) -> None:
    setup = backend.make()
    await setup.open()
    fleet = make_fleet(3)
    await provision(setup, fleet)
    heard, unheard, disabled = fleet.meters
    if backend.kind == "postgresql":  # the network to the server cut
        proxy, store = await behind_a_proxy(backend)
    else:  # the database locked by another process: no answer within store_timeout
        store = setup
    spool = Spool(tmp_path / "spool")
    await spool.open()
    sac = Sac(store, spool=spool, store_timeout=1.0, spool_per_address=2)
    sacs.append(sac)
    port = await sac.listen()
    sac.acquisition.start(replay_every=0.2)
    assert await sac.acquisition.loaded == 3  # the store's meters, known from the start
    assert (await send_from("127.0.0.1", port, push_bytes(heard))).check(ConnectionDone)
    stored = len(await setup.readings.last(heard.ldn, INDEX, limit=100))
    await store.meters.set_state(disabled.ldn, MeterState.DISABLED)  # withdrawn

    if backend.kind == "postgresql":
        await proxy.down()
    else:
        release = backend.lock()
    strangers = make_fleet(3, seed=9, first_serial=900).meters  # random titles, as junk has
    with failures_logged() as failures:
        for m in [*strangers, disabled]:  # refused: not acknowledged, not spooled
            assert not (await send_from("127.0.0.1", port, push_bytes(m))).check(ConnectionDone)
        assert spool.depth == 0
        # PostgreSQL: the meters cannot be looked up, only known ones are spooled; a locked
        # SQLite lets the lookups (reads) through, so they are refused for what they are
        # (unless a lookup is slower than store_timeout on a loaded machine)
        reasons = ("not-spooled",) if backend.kind == "postgresql" else REFUSALS
        assert sum(rejected(sac, r) for r in reasons) == 4
        # a meter of the store at the start, not heard since: spooled and acknowledged
        assert (await send_from("127.0.0.5", port, push_bytes(unheard))).check(ConnectionDone)
        # the meter heard: two from its address (an hour apart on its clock: readings of
        # their own) ...
        for _ in range(2):
            assert (await send_from("127.0.0.1", port, later(heard))).check(ConnectionDone)
        assert spool.depth == 3
        # ... and no more from that address while they wait
        assert not (await send_from("127.0.0.1", port, later(heard))).check(ConnectionDone)
        assert sum(rejected(sac, r) for r in reasons) == 5
        assert spool.depth == 3
    assert not failures, failures[0].getTraceback()

    if backend.kind == "postgresql":
        await proxy.up()
    else:
        release()
    await until(lambda: spool.depth == 0, "the spool replayed")
    sac.acquisition.stop()
    await spool.close()
    readings = await setup.readings.last(heard.ldn, INDEX, limit=100)
    assert len(readings) == stored + 2  # both spooled pushes stored
    # the last push acknowledged is the last stored (the one refused after it is not)
    assert await setup.counters.last(heard.ldn, 1) == (0, heard.our_counter - 2)
    assert await setup.counters.last(unheard.ldn, 1) == (0, unheard.our_counter - 1)
    assert not await setup.readings.last(disabled.ldn, INDEX)


def untitled(meter: Any) -> bytes:
    """A push of ``meter`` ciphered with an empty system title (as some profiles send), an
    hour after its last one (readings of its own)."""
    meter.clock_offset += 3600
    protocol = MeterProtocol(meter, push_template=meter.profile.push_templates[0], reactor=reactor)
    protocol.security.omit_system_title = True
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.connectionLost(None)
    frame = transport.value()
    assert meter.system_title not in frame
    return frame


@pytest_twisted.ensureDeferred
async def test_pushes_without_system_title_are_matched_by_key_among_their_candidates(
    backend: Backend, sacs: list[Sac]
) -> None:
    store = backend.make()
    await store.open()
    fleet = make_fleet(4)
    await provision(store, fleet)
    a, b, roamer, other = fleet.meters
    for m in (a, b):  # two meters allowed to call from one address (one APN gateway, say)
        await store.meters.update(m.ldn, {"allowed_ips": ("127.0.0.2",)})
    sac = Sac(store)
    sacs.append(sac)
    port = await sac.listen()
    with failures_logged() as failures:
        for m in (a, b, b, a):  # each one's push is its own, whichever comes first
            assert (await send_from("127.0.0.2", port, untitled(m))).check(ConnectionDone)
        for m in (a, b):
            assert len(await store.readings.last(m.ldn, INDEX, limit=10)) == 2
        # no allowlist: found as the meter last heard from the address (with its title)
        assert (await send_from("127.0.0.4", port, later(roamer))).check(ConnectionDone)
        assert (await send_from("127.0.0.4", port, untitled(roamer))).check(ConnectionDone)
        assert len(await store.readings.last(roamer.ldn, INDEX, limit=10)) == 2
        # another meter's push from the shared address: none of the candidates' keys opens
        # it, and neither of them is blamed (nor its counter touched)
        counters = [await store.counters.last(m.ldn, 1) for m in (a, b)]
        assert not (await send_from("127.0.0.2", port, untitled(other))).check(ConnectionDone)
        assert rejected(sac, "unidentified") == 1 and rejected(sac, "bad-tag") == 0
        assert [await store.counters.last(m.ldn, 1) for m in (a, b)] == counters
        # without title from an address no meter knows: refused, cleanly
        assert not (await send_from("127.0.0.3", port, untitled(other))).check(ConnectionDone)
        assert rejected(sac, "unknown-meter") == 1
    assert not failures, failures[0].getTraceback()
    assert sac.acquisition.metrics.value("sac_push_stored_total") == 6
