"""The newest reading of each of some (object, attribute) pairs of one meter, in one
statement (the configuration page, :mod:`sac.web.settingspage`, and its JSON API): a
``UNION ALL`` of one small part a pair, each the newest row of its own range of the index
(``ORDER BY captured DESC LIMIT 1``), so the cost grows with the pairs asked for, not with
the meter's history."""

from __future__ import annotations

from collections.abc import Collection

from sac.dlms import Obis
from sac.store.model import Reading
from sac.store.rows import READING_VALUES, reading_row
from sac.store.sql import Query, Transaction

__all__ = ["newest_readings"]

_METER = "(SELECT id FROM meters WHERE ldn = ?)"


def newest_readings(
    ldn: str, pairs: Collection[tuple[Obis, int]]
) -> Transaction[dict[tuple[Obis, int], Reading]]:
    """{(obis, attribute): its newest reading by capture time} of one meter, for those of
    ``pairs`` it has one of (an unknown meter has none)."""
    wanted = sorted({(str(obis), attribute) for obis, attribute in pairs})
    if not wanted:
        return {}
    part = (
        "SELECT * FROM (SELECT id FROM readings WHERE meter_id = {meter} AND obis = ?"
        " AND attribute = ? AND captured IS NOT NULL ORDER BY captured DESC LIMIT 1) p{i}"
    )
    parts = " UNION ALL ".join(part.format(meter=_METER, i=i) for i in range(len(wanted)))
    rows = yield Query(
        f"SELECT r.obis, r.attribute, {READING_VALUES} FROM readings r WHERE r.id IN ({parts})",
        [value for obis, attribute in wanted for value in (ldn, obis, attribute)],
    )
    found = {}
    for row in rows:
        obis, attribute = Obis(row[0]), int(row[1])
        found[(obis, attribute)] = reading_row(ldn, obis, attribute, row[2:])
    return found
