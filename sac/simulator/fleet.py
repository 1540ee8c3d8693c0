"""Many simulated meters in one process: distinct LDNs, system titles and keys.

Keys are derived from the fleet's seed (HMAC-SHA256 of the LDN), so a fleet started again
with the same seed has the same keys; :meth:`Fleet.keys_csv` writes them in the format the
SAC imports (``ldn,client,ek,ak``), :meth:`Fleet.meters_csv` the meters themselves.

Time: :class:`SimClock` runs ``speed`` times faster than the reactor's clock.  Invocation
counters start at the seconds elapsed since 2024-01-01 (real time), so that a fleet restarted
later never sends a counter it has sent before, as a real meter keeps its counter in
non-volatile memory -- unless a meter pushed more than once a second on average.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import random
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from twisted.internet.defer import Deferred, DeferredSemaphore
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.logger import Logger

from sac.profiles import UNIT_PERCENT, IMeterProfile, uni_ts_system_title
from sac.simulator.meter import SimulatedMeter
from sac.simulator.session import MeterProtocol, MeterServerFactory
from sac.simulator.settings import DEFAULTS, destination_address, in_window, next_execution

__all__ = ["Fleet", "SimClock"]

_COUNTER_EPOCH = 1_704_067_200  # 2024-01-01T00:00:00Z


# one meter in LOW_BATTERY starts with little battery left: its first gas days log
# battery below 10 % (event 74) and set the daily diagnostic's battery bits, as a real fleet's
# older meters do (the demo shows them)
LOW_BATTERY = 10


class SimClock:
    """UNIX seconds of the simulated world: ``speed`` times the reactor's pace from ``start``.

    With ``catch_up``, the simulated time runs fast only until it reaches the wall clock,
    then follows it: a fleet started in the past fills the hours up to now, and never pushes
    readings dated in the future (what a demo wants).  Pushes keep their real pace
    (:meth:`real_delay`), so each carries less simulated time once caught up."""

    def __init__(
        self,
        reactor: Any,
        speed: float = 1.0,
        start: float | None = None,
        *,
        catch_up: bool = False,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if speed <= 0:
            raise ValueError("the speed of time must be positive")
        self.reactor = reactor
        self.speed = speed
        self._real0 = reactor.seconds()
        self._wall0 = wall()
        self._sim0 = self._wall0 if start is None else start
        self.catch_up = catch_up

    def __call__(self) -> float:
        elapsed = self.reactor.seconds() - self._real0
        simulated = self._sim0 + elapsed * self.speed
        if self.catch_up:
            return min(simulated, self._wall0 + elapsed)
        return simulated

    @property
    def caught_up(self) -> bool:
        """Whether the simulated time has reached the wall clock (with ``catch_up``)."""
        elapsed = self.reactor.seconds() - self._real0
        return self.catch_up and self._sim0 + elapsed * self.speed >= self._wall0 + elapsed

    def real_delay(self, simulated_seconds: float) -> float:
        return simulated_seconds / self.speed

    def real_delay_until(self, simulated: float) -> float:
        """Real seconds until the simulated time reaches ``simulated`` (0 if it has): at
        ``speed``, and, with ``catch_up``, at the wall clock's pace once caught up."""
        elapsed = self.reactor.seconds() - self._real0
        needed = (simulated - self._sim0) / self.speed
        if self.catch_up:  # min(sim0 + e * speed, wall0 + e) >= simulated
            needed = max(needed, simulated - self._wall0)
        return max(0.0, needed - elapsed)


class Fleet:
    log = Logger()

    def __init__(
        self,
        count: int,
        profile: IMeterProfile,
        *,
        manufacturer: str = "SIM",
        first_serial: int = 1,
        seed: int = 0,
        clock: Callable[[], float],
        reactor: Any,
        sac_system_title: bytes = b"SACSACSA",
    ) -> None:
        if not 1 <= count <= 1_000_000:
            raise ValueError("a fleet has 1 to 1,000,000 meters")
        self.profile = profile
        self.reactor = reactor
        self.clock = clock
        self.rng = random.Random(seed)
        self._secret = hashlib.sha256(f"sac-simulator:{seed}".encode()).digest()
        start_counter = max(1, int(time.time()) - _COUNTER_EPOCH)
        self.meters = [
            self._meter(manufacturer, serial, start_counter, sac_system_title)
            for serial in range(first_serial, first_serial + count)
        ]
        for m in self.meters[LOW_BATTERY - 1 :: LOW_BATTERY]:  # a fleet has its tired meters:
            m.battery = 8 if self.profile.battery_unit == UNIT_PERCENT else 365  # low tomorrow
        self.pushes = 0  # sessions that reached the SAC
        self.failures = 0  # pushes that could not connect
        self.failed_pushes = 0  # pushes the simulator itself failed (logged)
        self._calls: dict[str, Any] = {}  # LDN: its next push
        self._ports: list[Any] = []

    def _meter(
        self, manufacturer: str, serial: int, counter: int, sac_system_title: bytes
    ) -> SimulatedMeter:
        ldn = f"{manufacturer}{serial:013d}"
        return SimulatedMeter(
            ldn=ldn,
            system_title=uni_ts_system_title(manufacturer, serial),
            key=self.key_of(ldn),
            profile=self.profile,
            clock=self.clock,
            rng=self.rng,
            pdr=f"{serial:014d}",
            serial=serial,
            litres_per_day=self.rng.uniform(800, 6000),
            index_litres=self.rng.randrange(0, 40_000_000),
            invocation_counter=counter,
            sac_system_title=sac_system_title,
        )

    def key_of(self, ldn: str) -> bytes:
        return hmac.new(self._secret, ldn.encode("ascii"), hashlib.sha256).digest()[:16]

    # --- what the SAC imports ----------------------------------------------------------------

    def keys_csv(self) -> str:
        """The Management client's key of every meter (AK = EK: the ak column is empty)."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(("ldn", "client", "ek", "ak"))
        for m in self.meters:
            writer.writerow((m.ldn, 1, m.key.hex().upper(), ""))
        return out.getvalue()

    def meters_csv(self, listen_base: int | None = None, host: str = "127.0.0.1") -> str:
        """The meters: LDN, PDR, system title, profile, and their address in listen mode."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(("ldn", "pdr", "system_title", "profile", "address"))
        for i, m in enumerate(self.meters):
            address = f"{host}:{listen_base + i}" if listen_base is not None else ""
            writer.writerow((m.ldn, m.pdr, m.system_title.hex(), self.profile.name, address))
        return out.getvalue()

    # --- push mode ---------------------------------------------------------------------------

    def start_pushing(
        self, host: str, port: int, interval: float, *, max_sessions: int = 200
    ) -> None:
        """Each meter calls the SAC every ``interval`` simulated seconds (10 % jitter), the
        first time at a random moment of the first interval; a meter whose push schedule is
        set calls at its execution times instead (:meth:`_plan`).  Its push setup's
        destination, when it is ``host:port``, replaces ``host`` and ``port``."""
        self._limit = DeferredSemaphore(max_sessions)
        self._endpoint = TCP4ClientEndpoint(self.reactor, host, port, timeout=10)
        self._interval = interval
        # what a meter nobody configured answers for its destination: where it pushes
        defaults = self._defaults = replace(DEFAULTS, destination=(0, f"{host}:{port}".encode(), 0))
        replan = self._replan
        for m in self.meters:
            if m.settings is DEFAULTS:
                m.settings = defaults  # shared, as DEFAULTS is
            m.replan = replan
            self._schedule(m, self.rng.uniform(0, interval))

    def _real(self, simulated_delay: float) -> float:
        if isinstance(self.clock, SimClock):
            return self.clock.real_delay(simulated_delay)
        return simulated_delay

    def _schedule(self, m: SimulatedMeter, simulated_delay: float) -> None:
        self._call(m, self._real(simulated_delay))

    def _call(self, m: SimulatedMeter, real_delay: float) -> None:
        self._calls[m.ldn] = self.reactor.callLater(real_delay, self._push, m)

    def _plan(self, m: SimulatedMeter, jitter: float) -> float:
        """Real seconds to ``m``'s next push.  With execution times: the next of them (its
        clock, Italian time); else ``interval`` x ``jitter`` from now, at the real pace of
        :meth:`SimClock.real_delay` as always.  Either moves into its communication window
        when one is set, then waits a random 0..randomisation_start_interval seconds."""
        s = m.settings
        if not (s.push_times or s.windows or s.randomisation):
            return self._real(self._interval * jitter)  # as a meter nobody configured
        now = m.now()
        at = next_execution(s.push_times, now) if s.push_times else None
        spread = self.rng.uniform(0, s.randomisation) if s.randomisation else 0.0
        if at is None:
            return self._real(in_window(s.windows, now + self._interval * jitter) - now + spread)
        target = in_window(s.windows, at) + spread - m.clock_offset  # on the fleet's clock
        if isinstance(self.clock, SimClock):
            return self.clock.real_delay_until(target)
        return max(0.0, target - self.clock())

    def _replan(self, m: SimulatedMeter) -> None:
        """A SET moved ``m``'s pushes: its pending call is replaced (a push under way plans
        the next one itself when it ends, with the new settings)."""
        call = self._calls.get(m.ldn)
        if call is None or not call.active():
            return
        call.cancel()
        self._call(m, self._plan(m, self.rng.uniform(0.9, 1.1)))

    def _template(self, m: SimulatedMeter) -> int:
        if m.settings.template is not None:
            return m.settings.template  # its push_object_list
        templates = self.profile.push_templates
        if len(templates) > 1 and m.last_day % 3 == 0:
            return templates[1]  # the daily data every third day (docs/uni-ts-11291.md §5, OGM)
        return templates[0]

    def _endpoint_of(self, m: SimulatedMeter) -> Any:
        """Where ``m`` pushes: its push setup's destination when it is one, else the fleet's."""
        raw = m.settings.destination[1]
        if raw == self._defaults.destination[1]:
            return self._endpoint
        address = destination_address(raw) if raw else None
        if address is None:
            if raw:
                self.log.warn(
                    "meter {ldn}: push destination {raw!r} is not host:port: the fleet's",
                    ldn=m.ldn,
                    raw=raw,
                )
            return self._endpoint
        return TCP4ClientEndpoint(self.reactor, *address, timeout=10)

    def _connected(self, protocol: MeterProtocol) -> None:
        if not protocol.failed:
            self.pushes += 1

    def _push(self, m: SimulatedMeter) -> Deferred[None]:
        def session() -> Deferred[None]:
            protocol = MeterProtocol(m, push_template=self._template(m), reactor=self.reactor)
            ended: Deferred[None] = Deferred()
            lost = protocol.connectionLost

            def on_lost(reason: Any = None) -> None:
                lost(reason)
                if protocol.failed:
                    self.failed_pushes += 1
                ended.callback(None)

            protocol.connectionLost = on_lost  # type: ignore[method-assign]

            def failed(failure: Any) -> None:
                self.failures += 1
                self.log.warn("meter {ldn}: cannot reach the SAC: {f}", ldn=m.ldn, f=failure.value)

            connecting = connectProtocol(self._endpoint_of(m), protocol)
            connecting.addCallback(lambda _: self._connected(protocol))
            connecting.addCallback(lambda _: ended)
            connecting.addErrback(failed)
            return connecting

        done = self._limit.run(session)
        jitter = self.rng.uniform(0.9, 1.1)
        done.addBoth(lambda _: self._call(m, self._plan(m, jitter)))
        return done

    # --- listen mode -------------------------------------------------------------------------

    async def listen(self, base_port: int, interface: str = "127.0.0.1") -> list[int]:
        """Meter i listens on ``base_port + i`` (0: any free port each); the ports."""
        ports = []
        for i, m in enumerate(self.meters):
            number = base_port + i if base_port else 0
            endpoint = TCP4ServerEndpoint(self.reactor, number, interface=interface)
            listening = await endpoint.listen(MeterServerFactory(m, self.reactor))
            self._ports.append(listening)
            ports.append(listening.getHost().port)
        return ports

    async def stop(self) -> None:
        for call in self._calls.values():
            if call.active():
                call.cancel()
        self._calls.clear()
        for listening in self._ports:
            await listening.stopListening()
        self._ports.clear()
