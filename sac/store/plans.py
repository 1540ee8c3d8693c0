"""Where each meter stands on its read plan (sac.profiles.readplan), written with what the plan
read, in the same transaction (:func:`write_marks` from the ingest), and read back for the
meters of a batch of pushes (:func:`marks_of`) or for one meter (:func:`meter_marks`)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Any

from sac.store.model import PlanMark
from sac.store.sql import InsertRows, Query, Transaction, stamp, when

__all__ = ["marks_of", "meter_marks", "plan_marks_of", "write_marks"]

_COLUMNS = (
    ("meter_id", "int"),
    ("quantity", "text"),
    ("read_at", "time"),
    ("counter", "int"),
    ("newest", "time"),
)
# a mark moves forward: the newest entry held never goes back (a read that found none keeps it)
_UPSERT = (
    "(meter_id, quantity) DO UPDATE SET read_at = excluded.read_at,"
    " counter = COALESCE(excluded.counter, read_plan_state.counter),"
    " newest = COALESCE(excluded.newest, read_plan_state.newest)"
)


def write_marks(marks: Sequence[PlanMark], ids: dict[str, int]) -> Transaction[int]:
    """Store ``marks`` (the meters' ids known in ``ids``); one row per meter and quantity,
    the latest read of a batch winning (an upsert may not touch a row twice)."""
    latest: dict[tuple[str, str], PlanMark] = {}
    for mark in marks:
        key = (mark.ldn, mark.quantity)
        if key not in latest or mark.read_at >= latest[key].read_at:
            latest[key] = mark
    rows = [
        (ids[m.ldn], m.quantity, m.read_at, m.counter, m.newest)
        for _, m in sorted(latest.items(), key=lambda kv: kv[0])  # one lock order
    ]
    if not rows:
        return 0
    count = yield InsertRows("read_plan_state", _COLUMNS, rows, _UPSERT)
    return int(count)


def marks_of(meter_ids: Collection[int]) -> Transaction[dict[str, tuple[PlanMark, ...]]]:
    """The marks of the meters ``meter_ids``, by LDN (a meter never read: absent)."""
    if not meter_ids:
        return {}
    ordered = sorted(meter_ids)
    rows = yield Query(
        "SELECT m.ldn, p.quantity, p.read_at, p.counter, p.newest"
        " FROM read_plan_state p JOIN meters m ON m.id = p.meter_id"
        f" WHERE p.meter_id IN ({', '.join('?' * len(ordered))})",
        ordered,
    )
    return plan_marks_of(rows)


def plan_marks_of(rows: Iterable[Sequence[Any]]) -> dict[str, tuple[PlanMark, ...]]:
    """Marks by LDN, from rows of (ldn, quantity, read_at, counter, newest)."""
    found: dict[str, list[PlanMark]] = {}
    for ldn, quantity, read_at, counter, newest in rows:
        mark = PlanMark(ldn, quantity, stamp(read_at), counter, when(newest))
        found.setdefault(ldn, []).append(mark)
    return {ldn: tuple(marks) for ldn, marks in found.items()}


def meter_marks(ldn: str) -> Transaction[tuple[PlanMark, ...]]:
    """One meter's marks (none for an unknown LDN)."""
    rows = yield Query("SELECT id FROM meters WHERE ldn = ?", (ldn,))
    if not rows:
        return ()
    found = yield from marks_of([int(rows[0][0])])
    return found.get(ldn, ())
