"""The read plan in a meter's session: what the Management client reads beyond what the
meter's frame carried (sac.profiles.readplan), after the queued commands, in the push
session and in the poll alike.

:func:`due_now` says which items of the meter's plan are due, from where the meter stands
(its :class:`~sac.store.model.PlanMark`, which the push's own transaction returns, or a poll
reads) and from the event counters its frame just carried.  :func:`run_plan` reads them in
the plan's order while the session's budget lasts: an item is started only while the time
left is more than twice the slowest item so far (and a second): what does not fit stays due
for the next session, and the meter's window is never overrun.

Each item read is marked (when, the counter it watches, the newest entry held) in the same
transaction as what it read, so an item is marked read only once its values are stored.  A
logbook or profile is read by range from just after the newest entry held: an entry is read
once.  An item the meter refuses (object-undefined...) or whose answer does not decode is
marked too, with why in ``skipped``: it is tried again after its period, not in every
session.  When the link breaks, the items after it stay due.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sac.profiles import IMeterProfile
from sac.profiles.readplan import PlanItem, PlanState, ReadKind, due_items
from sac.services.readings import meter_time, status_of
from sac.services.session import MeterSession, merge
from sac.store.model import Ingest, PlanMark

__all__ = ["carried", "due_now", "read_counters", "run_plan", "states_of"]

_MIN_LEFT = 1.0  # seconds: never start an item with less than this left
_SECOND = dt.timedelta(seconds=1)


def states_of(marks: Iterable[PlanMark]) -> dict[str, PlanState]:
    return {m.quantity: PlanState(m.read_at, m.counter, m.newest) for m in marks}


def carried(profile: IMeterProfile, template: int, values: Mapping[str, Any]) -> dict[str, Any]:
    """What a frame of ``template`` carried of the plan's objects and watched counters, by
    quantity: a layout field bound to the quantity's object, whatever the field's name."""
    found = {}
    for quantity, name in _plan_fields(profile, template):
        value = values.get(name)
        if value is not None:
            found[quantity] = value
    return found


@functools.lru_cache(maxsize=256)
def _plan_fields(profile: IMeterProfile, template: int) -> tuple[tuple[str, str], ...]:
    """(quantity, field name) of the plan's objects and counters in a layout: the same for
    every push of a profile's template, worked out once (a push pays a dict lookup each)."""
    layout = profile.layouts.get(template)
    if layout is None:
        return ()
    fields = {(f.obis, f.attribute): f.name for f in layout.fields if f.obis is not None}
    wanted = {item.quantity for item in profile.read_plan}
    wanted |= {item.when_moved for item in profile.read_plan if item.when_moved}
    found = []
    for quantity in sorted(wanted):
        ref = profile.objects.get(quantity)
        name = fields.get((ref.obis, ref.attribute)) if ref is not None else None
        if name is not None:
            found.append((quantity, name))
    return tuple(found)


async def read_counters(session: MeterSession, carried: Mapping[str, Any]) -> dict[str, Any]:
    """What the frame carried, with the watched counters read from the meter now (a GET
    each): after commands (a valve operation logs an event: what the frame said before is
    stale) or in a poll, whether a logbook moved is known only by asking.  A counter the
    meter does not give keeps the frame's value, or is left out."""
    found = dict(carried)
    watched = {item.when_moved for item in session.profile.read_plan if item.when_moved}
    for quantity in sorted(watched):
        ref = session.profile.objects.get(quantity)
        if ref is not None:
            value = await session.attempt(quantity, session.get(ref))
            if isinstance(value, int):
                found[quantity] = value
    return found


def due_now(
    profile: IMeterProfile,
    marks: Iterable[PlanMark],
    now: dt.datetime,
    frame: Mapping[str, Any] | None = None,
) -> list[PlanItem]:
    """The items due, less those the frame carried (``frame``: :func:`carried`); its event
    counters tell whether a logbook moved."""
    frame = frame or {}
    counters = {q: int(v) for q, v in frame.items() if isinstance(v, int)}
    due = due_items(tuple(profile.read_plan), states_of(marks), now, counters)
    return [item for item in due if item.quantity not in frame]


async def run_plan(
    session: MeterSession,
    due: Sequence[PlanItem],
    marks: Iterable[PlanMark],
    deadline: float,
    clock: Any,
    counters: Mapping[str, int] | None = None,
) -> Ingest:
    """Read the ``due`` items in order while the budget lasts (``deadline`` in ``clock``'s
    seconds); what they read, the meter's list values they give (battery, diagnostic) and
    their marks, to store in one transaction."""
    states = states_of(marks)
    parts: list[Ingest] = []
    new_marks: list[PlanMark] = []
    values: dict[str, Any] = {}
    slowest = 0.0
    for item in due:
        if deadline - clock.seconds() < max(_MIN_LEFT, 2 * slowest):
            left = ", ".join(i.quantity for i in due[due.index(item) :])
            session.skipped.append(f"{left}: left for the next session (the budget)")
            break
        began = clock.seconds()
        state = states.get(item.quantity, PlanState())
        part = await session.attempt(item.quantity, _read(session, item, state, values))
        slowest = max(slowest, clock.seconds() - began)
        if session.broken is not None:
            break  # the link: this item and the rest stay due
        newest = _newest(part, state.newest) if item.kind is ReadKind.SINCE_LAST else None
        watched = (counters or {}).get(item.when_moved or "")
        new_marks.append(PlanMark(session.ldn, item.quantity, session.now(), watched, newest))
        if part is not None:
            parts.append(part)
            session.read.append(item.quantity)
    statuses = [_status(session, values)] if values else []
    return merge([*parts, Ingest(statuses=statuses, plan_marks=new_marks)])


async def _read(
    session: MeterSession, item: PlanItem, state: PlanState, values: dict[str, Any]
) -> Ingest:
    ref = session.profile.objects[item.quantity]
    if item.kind is ReadKind.SINCE_LAST:
        end = session.now()
        start = (
            state.newest + _SECOND
            if state.newest is not None
            else end - dt.timedelta(days=session.settings.poll_days)
        )
        return await session.read_profile(item.quantity, start, end + dt.timedelta(hours=1))
    got = await session.get(ref)
    if item.quantity == "clock":  # its drift: the meter's time beside the SAC's receipt
        raw = bytes(got) if isinstance(got, bytes) else None
        inverted = bool(session.profile.inverted_deviation)
        at = meter_time(raw, inverted_deviation=inverted) if raw is not None else None
        return Ingest(readings=[session.reading(ref, got, at)])
    scaler = await session.scaler_unit(ref)
    values[item.quantity] = got
    return Ingest(readings=[session.reading(ref, got, None, scaler)])


def _newest(part: Ingest | None, before: dt.datetime | None) -> dt.datetime | None:
    """The newest entry a profile or logbook read held (its capture times)."""
    if part is None:
        return before
    times = [e.occurred for e in part.events]
    times += [r.captured for r in part.readings if r.captured is not None]
    found = max(times, default=None)
    if found is None or (before is not None and before > found):
        return before
    return found


def _status(session: MeterSession, values: dict[str, Any]) -> Any:
    """The meter's list values the plan read (battery autonomy, current diagnostic)."""
    battery = session.profile.objects["battery_autonomy"]
    unit = session.scalers.get(battery.obis, (0, int(session.profile.battery_unit)))[1]
    return status_of(
        session.ldn, values, connected=session.now(), at=None, index=None, battery_unit=unit
    )
