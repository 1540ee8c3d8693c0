"""A profile's read plan: what the Management client reads in a meter's session beyond what the
meter's compact frame carried, and how often.

Each :class:`PlanItem` names a quantity of the profile's object map and how it is read:

- ``VALUE``: one attribute (its value, and for a register, IC 3, its scaler and unit);
- ``SINCE_LAST``: a profile or logbook (IC 7) by range, from just after the last entry the
  SAC holds (selective access by range on its first column), so an entry is read once.

An item is due when it was never read, when ``every`` has passed since it was last read (less
a tenth: a meter that pushes daily at about the same hour, a few minutes early today, still
gets its daily items), or when the counter named by ``when_moved`` (an event counter a frame
carries) differs from the value it had when the item was last read.  A session reads the due
items in the plan's order while its time budget lasts; what does not fit stays due for the
next session.  The same plan serves polls.

The generic UNI/TS plan (:data:`UNI_TS_PLAN`) reads the battery and the current diagnostic
daily, the clock daily (its drift), the three logbooks since their last entry (daily, and at
once when the frame's counters moved), and the daily load profile since its last entry (the
gas days a missed push left out).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["UNI_TS_PLAN", "PlanItem", "PlanState", "ReadKind", "due_items"]


class ReadKind(StrEnum):
    VALUE = "value"
    SINCE_LAST = "since-last"


@dataclass(frozen=True, slots=True)
class PlanItem:
    quantity: str  # a key of the profile's ``objects``
    every: dt.timedelta  # at most this often; timedelta(0): in every session
    kind: ReadKind = ReadKind.VALUE
    when_moved: str | None = None  # a counter quantity whose change makes the item due


@dataclass(frozen=True, slots=True)
class PlanState:
    """What the SAC knows of one item for one meter: when it was last read, the counter it
    watches as it was then, and (``SINCE_LAST``) the capture time of the newest entry held."""

    read_at: dt.datetime | None = None
    counter: int | None = None
    newest: dt.datetime | None = None


DAY = dt.timedelta(days=1)
SLACK = 0.1  # an item is due once 90 % of its period has passed

UNI_TS_PLAN: tuple[PlanItem, ...] = (
    PlanItem("battery_autonomy", DAY),
    PlanItem("current_diagnostic", DAY),
    PlanItem("event_logbook", DAY, ReadKind.SINCE_LAST, when_moved="event_counter"),
    PlanItem(
        "metrological_logbook", DAY, ReadKind.SINCE_LAST, when_moved="metrological_event_counter"
    ),
    PlanItem("clock", DAY),
    PlanItem("daily_profile", DAY, ReadKind.SINCE_LAST),
    PlanItem("parameter_logbook", 7 * DAY, ReadKind.SINCE_LAST),
)


def due_items(
    plan: tuple[PlanItem, ...],
    states: Mapping[str, PlanState],
    now: dt.datetime,
    counters: Mapping[str, int] | None = None,
) -> list[PlanItem]:
    """The items of ``plan`` due now, in the plan's order.  ``states``: by quantity, what was
    read before (absent: never); ``counters``: the counters the meter's frame just carried."""
    due = []
    for item in plan:
        state = states.get(item.quantity)
        if (
            state is None
            or state.read_at is None
            or now - state.read_at >= item.every * (1 - SLACK)
        ):
            due.append(item)
            continue
        counter = (counters or {}).get(item.when_moved or "")
        if counter is not None and counter != state.counter:
            due.append(item)
    return due
