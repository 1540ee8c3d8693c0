"""One poll: the SAC dials a meter that listens (mains-powered or lab meters).

:func:`poll_meter` dials it (:func:`sac.protocols.client.dial`) and runs one session over
the connection: Public association to read the LDN and the frame counter (the meter must be
the one we dialled), the meter's key loaded by LDN, the Management association from FC + 1,
the profile's objects read (block transfer and selective access for the daily profile and
the logbooks), stored, then the meter's queued commands, then a clean close.  The scheduler
that calls it is :class:`sac.services.poller.Poller`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from sac.errors import ProtocolError, SacError
from sac.profiles import ProfileRegistry
from sac.protocols.client import PollProtocol, dial
from sac.services.ingest import IngestStore
from sac.services.plan import due_now, read_counters, run_plan
from sac.services.session import MeterSession, SessionSettings, SessionStore, merge, requeue
from sac.store.model import Command, Ingest

if TYPE_CHECKING:
    from sac.store.meters import IMeters

__all__ = ["PollFailed", "PollResult", "PollStore", "poll_meter"]


class PollStore(SessionStore, IngestStore, Protocol):
    """The parts of the store a poll reaches: the meter and its schedule, what a session
    reaches, and the readings."""

    @property
    def meters(self) -> IMeters: ...


class PollFailed(SacError):
    """A poll that could not be completed (the reason in the message); ``read`` and
    ``skipped``: what its session read before, and what it could not."""

    read: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()


class PollResult:
    """What a poll stored; ``read``: the quantities it read beyond the meter's list values;
    ``skipped``: the objects it could not read, each with why."""

    def __init__(
        self,
        ldn: str,
        readings: int,
        events: int,
        commands: int,
        skipped: tuple[str, ...] = (),
        read: tuple[str, ...] = (),
    ) -> None:
        self.ldn = ldn
        self.readings = readings
        self.events = events
        self.commands = commands
        self.skipped = skipped
        self.read = read

    def __repr__(self) -> str:
        return (
            f"PollResult({self.ldn}, readings={self.readings}, events={self.events},"
            f" commands={self.commands}, skipped={len(self.skipped)})"
        )


async def poll_meter(
    ldn: str,
    address: str,
    *,
    store: PollStore,
    registry: ProfileRegistry,
    reactor: Any,
    settings: SessionSettings,
    connect_timeout: float = 10.0,
    response_timeout: float = 10.0,
    session_budget: float = 120.0,
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
) -> PollResult:
    """Dial ``address`` (host:port), poll the meter ``ldn`` there, store what it says and
    run its queued commands.  PollFailed says why a poll did not complete."""
    meter = await store.meters.get(ldn)
    if meter is None:
        raise PollFailed(f"no meter {ldn}")
    profile = registry.match(assigned=meter.profile)
    protocol = await _dial(ldn, address, reactor, connect_timeout, response_timeout)
    assert protocol.link is not None
    session = MeterSession(
        protocol.link, store, profile, settings=settings, now=now, source="poll", meter=meter
    )
    claimed: list[Command] = []
    deadline = reactor.seconds() + session_budget
    try:
        total = await _session(ldn, session, store, address, claimed, reactor, deadline)
    except (ProtocolError, SacError) as exc:
        await _abandon(protocol, session, store, claimed, str(exc))
        failed = exc if isinstance(exc, PollFailed) else PollFailed(f"meter {ldn}: {exc}")
        failed.read, failed.skipped = tuple(session.read), tuple(session.skipped)
        if failed is exc:
            raise
        raise failed from None
    if protocol.transport is not None:
        protocol.transport.loseConnection()
    await protocol.closed
    return PollResult(
        ldn,
        len(total.readings),
        len(total.events),
        len(claimed),
        tuple(session.skipped),
        tuple(session.read),
    )


async def _abandon(
    protocol: PollProtocol,
    session: MeterSession,
    store: PollStore,
    claimed: list[Command],
    why: str,
) -> None:
    """After a failed poll: the connection cut, what the session proved recorded all the
    same, the commands it claimed back in the queue."""
    protocol.abort(why)
    await protocol.closed
    await session.abandon()
    attempts = session.settings.command_attempts
    await requeue(store, claimed, f"poll failed: {why}", attempts=attempts)


async def _dial(
    ldn: str, address: str, reactor: Any, connect_timeout: float, response_timeout: float
) -> PollProtocol:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise PollFailed(f"meter {ldn}: address {address!r} is not host:port")
    try:
        return await dial(
            reactor,
            host.strip("[]"),
            int(port),
            connect_timeout=connect_timeout,
            response_timeout=response_timeout,
        )
    except Exception as exc:
        raise PollFailed(f"meter {ldn}: cannot connect to {address}: {exc}") from None


async def _session(
    ldn: str,
    session: MeterSession,
    store: PollStore,
    address: str,
    claimed: list[Command],
    clock: Any,
    deadline: float,
) -> Ingest:
    """The poll over a connection: what it stored.  ``claimed`` receives the commands it
    claims (put back in the queue by the caller when the poll fails)."""
    found, fc = await session.identify()
    if found != ldn:
        raise PollFailed(f"meter {ldn}: {address} answers as {found!r}")
    await session.open_management(fc)  # the Public client's FC: a hint
    batches: list[Ingest] = [await session.poll()]
    await store.readings.ingest(batches[-1])  # what was read, even when some of it was not
    if session.broken is not None:
        raise session.broken
    claimed.extend(await store.commands.claim(ldn, by=session.settings.name))
    if claimed:
        batches.append(await session.run_commands(claimed, deadline, clock))
        await store.readings.ingest(batches[-1])
    # the read plan, as a push session runs it (the poll read the list values already)
    marks = await store.readings.plan_marks(ldn)
    counters = await read_counters(session, {})
    due = due_now(session.profile, marks, session.now(), counters)
    batches.append(await run_plan(session, due, marks, deadline, clock, counters))
    await store.readings.ingest(batches[-1])
    if session.broken is not None:
        raise session.broken
    await session.close()
    return merge(batches)
