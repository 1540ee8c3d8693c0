"""Simulator benchmark: memory and CPU per meter for a fleet of 10,000 meters in one process.

    memory   bytes per meter: Python allocations (tracemalloc) and process RSS growth when the
             fleet is built
    life     CPU to advance every meter by one simulated day (24 hourly steps, the gas day,
             battery, events), per meter-day
    push     CPU to make one push: advance, build the compact frame, cipher it
             (general-glo-ciphering, AES-GCM) and frame it -- against the peer, AES-GCM alone
             sealing the same plaintext (cryptography's AESGCM), measured in the same run
    session  CPU of a whole push session over loopback TCP (connect, push, close) through
             the reactor, per session, with 200 sessions in flight

The figures that matter are the ratios and the per-meter costs.  Run:
``.venv/bin/python benchmarks/bench_simulator.py [--meters N]``.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import time
import tracemalloc
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import react

from sac.dlms.axdr import OctetString
from sac.dlms.security import SecurityContext, Suite0Cipher
from sac.dlms.server import ServerAssociation
from sac.dlms.xdlms import DataNotification
from sac.profiles import discover_profiles
from sac.simulator.fleet import Fleet, SimClock
from sac.simulator.meter import MANAGEMENT


def rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def cpu() -> float:
    return time.process_time()


def push_frame(meter: Any) -> bytes:
    """What a push session sends first: the meter's frame, ciphered, in a wrapper PDU."""
    meter.advance()
    buffer = meter.compact_buffer(meter.profile.push_templates[0])
    security = SecurityContext(
        Suite0Cipher(meter.key), meter.system_title, invocation_counter=meter.our_counter
    )
    association = ServerAssociation(meter, MANAGEMENT, 1, security=security, pre_established=True)
    association.notify(OctetString(buffer))
    meter.our_counter = security.invocation_counter
    return association.data_to_send()


class Sink(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.factory.received += 1
        self.transport.loseConnection()


async def main(reactor: Any, count: int) -> None:
    profile = discover_profiles().registry["uni-ts-11291-12-2"]
    clock = SimClock(reactor, 1.0)
    gc.collect()
    tracemalloc.start()
    rss0, before = rss_bytes(), tracemalloc.take_snapshot()
    t0 = cpu()
    fleet = Fleet(count, profile, clock=clock, reactor=reactor, seed=1)
    build = cpu() - t0
    gc.collect()
    after = tracemalloc.take_snapshot()
    rss1 = rss_bytes()
    tracemalloc.stop()
    python = sum(s.size_diff for s in after.compare_to(before, "filename"))
    print(f"fleet of {count:,} meters ({profile.name}), one process")
    print(
        f"  memory    {python / count:7,.0f} B/meter Python objects   "
        f"{(rss1 - rss0) / count:7,.0f} B/meter RSS   build {build / count * 1e6:5.1f} µs/meter"
    )

    # a simulated day for every meter
    shift = 86_400.0
    real = clock._sim0
    clock._sim0 = real + shift
    t0 = cpu()
    for m in fleet.meters:
        m.advance()
    life = (cpu() - t0) / count
    print(f"  life      {life * 1e6:7.1f} µs CPU per meter-day (24 hourly steps, gas day)")

    # one push frame, against AES-GCM alone on the same plaintext
    sample = fleet.meters[: min(count, 2000)]
    t0 = cpu()
    frames = [push_frame(m) for m in sample]
    ours = (cpu() - t0) / len(sample)
    plaintext = DataNotification(0, None, OctetString(sample[0].compact_buffer(47))).to_bytes()
    aes = AESGCM(sample[0].key)
    nonce, aad = bytes(12), b"\x30" + sample[0].key
    t0 = cpu()
    for _ in sample:
        aes.encrypt(nonce, plaintext, aad)
    raw = (cpu() - t0) / len(sample)
    print(
        f"  push      {ours * 1e6:7.1f} µs CPU per frame ({len(frames[0])} bytes)   "
        f"AES-GCM alone {raw * 1e6:5.1f} µs   ratio {ours / raw:5.1f}"
    )

    # whole sessions over loopback TCP
    factory = Factory.forProtocol(Sink)
    factory.received = 0
    factory.noisy = False
    sac = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
    sessions = min(count, 3000)
    done: Deferred[None] = Deferred()
    fleet.meters = fleet.meters[:sessions]
    t0, w0 = cpu(), time.perf_counter()
    fleet.start_pushing("127.0.0.1", sac.getHost().port, interval=10**9, max_sessions=200)
    for call in fleet._calls.values():
        call.reset(0)  # all at once

    def check() -> None:
        if factory.received >= sessions:
            done.callback(None)
        else:
            reactor.callLater(0.01, check)

    check()
    await done
    spent, wall = cpu() - t0, time.perf_counter() - w0
    await fleet.stop()
    await sac.stopListening()
    print(
        f"  session   {spent / sessions * 1e6:7.0f} µs CPU per push session over TCP "
        f"(both ends in this process)   {sessions / wall:6,.0f} sessions/s"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=10_000)
    args = parser.parse_args()
    react(lambda reactor: ensureDeferred(main(reactor, args.meters)))
