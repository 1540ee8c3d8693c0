"""Mutated frames over real loopback TCP, into the push listener of a real ``twistd sac``
and into the SAC's polling client, while a good meter keeps pushing and another keeps being
polled: those must never notice.

Push side, one connection a frame:

- *outer*: a genuine ciphered push (wrapper header and all) mutated as bytes -- the
  listener's framing, the envelope, the meter lookup and the tag check see it;
- *inner*: a meter with its real key mutates its DATA-NOTIFICATION *before* ciphering it, so
  the tag is good and the SAC's decoders and readings see the mutation (the meter's counter
  goes on as usual).

Poll side: meters listening on loopback whose answers (AARE, GET responses, blocks, the
Management association's ciphered answers) are mutated, as bytes on the wire or before
ciphering, at random; :func:`sac.services.poll.poll_meter` must end each poll with a
:class:`PollFailed` (or a success) and nothing else.
"""

from __future__ import annotations

import random
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import globalLogPublisher

from sac.profiles import discover_profiles
from sac.services.poll import PollFailed, poll_meter
from sac.services.session import SessionSettings
from sac.simulator.fleet import Fleet
from sac.simulator.meter import SimulatedMeter
from sac.simulator.session import MeterProtocol
from sac.store import NewMeter
from sac.store.connector import IStore
from sac.store.keycsv import parse_key_csv
from tests.fuzz.mutate import Mutator

REGISTRY = discover_profiles().registry
PROFILE = REGISTRY["uni-ts-11291-12-2"]
POLL_SETTINGS = SessionSettings(name="fuzz")


def rss_kib(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Shot(Protocol):
    """Sends its bytes, ends its side (FIN), and hears how the SAC ended the connection."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.ended: Deferred[bool] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.data)
        self.transport.loseWriteConnection()
        self._guard = reactor.callLater(30, self.transport.abortConnection)

    def connectionLost(self, reason: Any = None) -> None:
        if self._guard.active():
            self._guard.cancel()
        self.ended.callback(bool(reason.check(ConnectionDone)))


class Mutating(MeterProtocol):
    """A simulated meter whose frames are mutated, each with probability ``rate``: before
    ciphering (``inner``) or as bytes on the wire; ``mutated`` counts them."""

    def __init__(self, meter: SimulatedMeter, mutate: Callable[[bytes], bytes], rng: random.Random,
                 rate: float, inner: bool, **kw: Any) -> None:  # fmt: skip
        super().__init__(meter, **kw)
        self.mutate = mutate
        self.rng = rng
        self.rate = rate
        self.inner = inner
        self.mutated = 0
        for association in (self.public, self.management):
            self._hook(association)

    def _hook(self, association: Any) -> None:
        reply = association._reply

        def mutated_reply(apdu: bytes, *, protect: bool = True) -> None:
            if self.inner and self.rng.random() < self.rate:
                self.mutated += 1
                apdu = self.mutate(apdu)
            reply(apdu, protect=protect)

        association._reply = mutated_reply

    def _flush(self, association: Any) -> None:
        out = association.data_to_send()
        self._save_counters()
        if out and not self.inner and self.rng.random() < self.rate:
            self.mutated += 1
            out = self.mutate(out)
        if out:
            self.transport.write(out)


class MutatingServer(Factory):
    noisy = False

    def __init__(self, meter: SimulatedMeter, fuzz: WireFuzz) -> None:
        self.meter = meter
        self.fuzz = fuzz
        self.clean = False  # the canary: answers as it should
        self.last: Mutating | None = None

    def buildProtocol(self, addr: Any) -> Protocol:
        if self.clean:
            return MeterProtocol(self.meter, reactor=reactor)
        rng = self.fuzz.rng
        self.last = Mutating(self.meter, self.fuzz.mutator, rng, rate=rng.choice((0.1, 0.3, 0.6)),
                             inner=rng.random() < 0.5, reactor=reactor)  # fmt: skip
        return self.last


@dataclass
class WireRun:
    push_frames: int = 0  # mutated frames sent to the push listener
    push_outer: int = 0
    push_inner: int = 0
    push_acknowledged: int = 0  # inner-mutated pushes the SAC still took (it could read them)
    poll_frames: int = 0  # mutated answers sent to the polling client
    polls: int = 0
    polls_failed: int = 0  # with PollFailed (the expected end of most)
    canary_pushes: int = 0
    canary_failures: list[str] = field(default_factory=list)
    canary_polls: int = 0
    poll_bugs: list[str] = field(default_factory=list)  # poll_meter raised something else
    logged_failures: list[str] = field(default_factory=list)  # in this process
    rss_kib: list[int] = field(default_factory=list)  # of this process (the polling client)
    seconds: float = 0.0
    acknowledged_counters: list[int] = field(default_factory=list)  # the canary's
    mutations: Counter[str] = field(default_factory=Counter)

    @property
    def frames(self) -> int:
        return self.push_frames + self.poll_frames


class WireFuzz:
    """The fuzzing clients and meters; ``store`` is the SAC's (the polling client writes
    there, and the meters are provisioned there)."""

    def __init__(self, store: IStore, push_port: int, *, seed: int = 1) -> None:
        self.store = store
        self.push_port = push_port
        self.rng = random.Random(seed)
        fleet = Fleet(40, PROFILE, clock=reactor.seconds, reactor=reactor, seed=seed)
        self.meters = fleet.meters
        self.fleet = fleet
        self.push_meters = self.meters[:16]
        self.poll_meters = self.meters[16:38]
        self.canary_push, self.canary_poll = self.meters[38], self.meters[39]
        strangers = Fleet(8, PROFILE, clock=reactor.seconds, reactor=reactor, seed=seed + 1,
                          first_serial=90_000)  # fmt: skip
        # genuine pushes to mutate as bytes: of known meters (the tag check sees them) and of
        # strangers (the lookup sees them)
        self.pool = [self._push_bytes(m) for m in self.push_meters[:8] + strangers.meters]
        self.mutator = Mutator(self.rng, splice_with=self.pool)
        self.servers: dict[str, MutatingServer] = {}
        self.ports: list[Any] = []
        self.run = WireRun()

    @staticmethod
    def _push_bytes(meter: SimulatedMeter) -> bytes:
        from tests.acquisition.test_faults import push_bytes

        return push_bytes(meter)

    async def provision(self) -> None:
        """The meters in the store; the poll meters listening on loopback."""
        for m in self.meters:
            server = MutatingServer(m, self)
            listening = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(server)
            self.ports.append(listening)
            self.servers[m.ldn] = server
            address = f"127.0.0.1:{listening.getHost().port}"
            await self.store.meters.add(
                NewMeter(
                    m.ldn,
                    pdr=m.pdr,
                    system_title=m.system_title,
                    profile=PROFILE.name,
                    address=address,
                )
            )
        self.servers[self.canary_poll.ldn].clean = True
        rows, errors = parse_key_csv(self.fleet.keys_csv())
        assert not errors
        await self.store.keys.import_rows(rows)

    async def stop(self) -> None:
        for listening in self.ports:
            await listening.stopListening()

    # --- the push listener

    async def _shot(self, data: bytes) -> bool:
        protocol = Shot(data)
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.push_port), protocol)
        return await protocol.ended

    async def _inner_push(self, meter: SimulatedMeter) -> bool:
        protocol = Mutating(meter, self.mutator, self.rng, rate=1.0, inner=True, reactor=reactor,
                            push_template=PROFILE.push_templates[0])  # fmt: skip
        acknowledged, _why = await self._session(protocol)
        return acknowledged

    async def _session(self, protocol: MeterProtocol) -> tuple[bool, str]:
        """(acknowledged, how the connection ended)."""
        ended: Deferred[tuple[bool, str]] = Deferred()
        lost = protocol.connectionLost

        def on_lost(reason: Any = None) -> None:
            lost(reason)
            ended.callback((bool(reason.check(ConnectionDone)), reason.getErrorMessage()))

        protocol.connectionLost = on_lost  # type: ignore[method-assign]
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.push_port), protocol)
        return await ended

    async def _push_worker(self, frames: int, busy: list[SimulatedMeter]) -> None:
        run = self.run
        while run.push_frames < frames:
            run.push_frames += 1
            free = [m for m in self.push_meters if m not in busy]
            if free and self.rng.random() < 0.3:
                meter = self.rng.choice(free)
                busy.append(meter)
                try:
                    ok = await self._inner_push(meter)
                finally:
                    busy.remove(meter)
                run.push_inner += 1
                run.push_acknowledged += ok
            else:
                await self._shot(self.mutator(self.rng.choice(self.pool)))
                run.push_outer += 1

    async def _canary_pusher(self, done: list[bool]) -> None:
        m = self.canary_push
        while not done:
            counter = m.our_counter
            ok, why = await self._session(
                MeterProtocol(m, push_template=PROFILE.push_templates[0], reactor=reactor)
            )
            self.run.canary_pushes += 1
            if ok:
                self.run.acknowledged_counters.append(counter)
            else:
                self.run.canary_failures.append(
                    f"push with counter {counter} not acknowledged: {why}"
                )
            await deferLater(reactor, 0.02, lambda: None)

    # --- the polling client

    async def _poll(self, meter: SimulatedMeter) -> None:
        server = self.servers[meter.ldn]
        try:
            await poll_meter(
                meter.ldn, f"127.0.0.1:{self.ports[self.meters.index(meter)].getHost().port}",
                store=self.store, registry=REGISTRY, reactor=reactor, settings=POLL_SETTINGS,
                connect_timeout=5, response_timeout=1, session_budget=30,
            )  # fmt: skip
        except PollFailed:
            if server.clean:
                raise
            self.run.polls_failed += 1
        except Exception as exc:
            where = "".join(traceback.format_exception(exc)[-6:])
            self.run.poll_bugs.append(f"{meter.ldn}: {type(exc).__name__}: {exc}\n{where}")
        finally:
            if server.last is not None:
                self.run.poll_frames += server.last.mutated
                server.last = None

    async def _poll_worker(self, meters: list[SimulatedMeter], frames: int) -> None:
        while self.run.poll_frames < frames:
            await self._poll(self.rng.choice(meters))
            self.run.polls += 1

    async def _canary_poller(self, done: list[bool]) -> None:
        while not done:
            try:
                await self._poll(self.canary_poll)
                self.run.canary_polls += 1
            except PollFailed as exc:
                self.run.canary_failures.append(f"poll: {exc}")
            await deferLater(reactor, 0.05, lambda: None)

    # --- a run

    async def fuzz(
        self,
        push_frames: int,
        poll_frames: int,
        *,
        concurrency: int = 32,
        sample: Callable[[], None] | None = None,
    ) -> WireRun:
        run = self.run

        def failures(event: dict[str, Any]) -> None:
            if "log_failure" in event:
                run.logged_failures.append(str(event["log_failure"].value))

        globalLogPublisher.addObserver(failures)
        started = time.perf_counter()
        done: list[bool] = []
        canaries = [
            Deferred.fromCoroutine(self._canary_pusher(done)),
            Deferred.fromCoroutine(self._canary_poller(done)),
        ]
        busy: list[SimulatedMeter] = []
        workers = [
            Deferred.fromCoroutine(self._push_worker(push_frames, busy)) for _ in range(concurrency)
        ]
        # one poller a meter (a meter serves one SAC connection at a time)
        workers += [
            Deferred.fromCoroutine(self._poll_worker([m], poll_frames)) for m in self.poll_meters
        ]

        def sampling() -> None:
            run.rss_kib.append(rss_kib())
            if sample is not None:
                sample()

        sampler = LoopingCall(sampling)
        sampler.start(2.0, now=True)
        try:
            results = await DeferredList(workers, consumeErrors=True)
            done.append(True)
            results += await DeferredList(canaries, consumeErrors=True)
        finally:
            sampler.stop()
            globalLogPublisher.removeObserver(failures)
        run.seconds = time.perf_counter() - started
        run.mutations = self.mutator.used
        for ok, result in results:
            if not ok:
                run.poll_bugs.append(f"a worker crashed: {result.getTraceback()}")
        return run
