"""Each object's history (issue 21): gas-day buckets across both daylight-saving changes, a
value's changes, the index at a gas month's start per PDR, and the PDR on export rows -- on
both backends."""

from __future__ import annotations

import datetime as dt

import pytest
import pytest_twisted

from sac import gasday
from sac.dlms import Obis
from sac.errors import BadCursor, InvalidRequest
from sac.store import NewMeter, Reading
from tests.store.conftest import Backend
from tests.store.test_operations import ldn, opened

INDEX = Obis("7.0.13.2.0.255")
OTHER_INDEX = Obis("7.0.13.0.0.255")  # a profile that keeps its index elsewhere
DIAGNOSTIC = Obis("7.0.96.5.1.255")
UTC = dt.UTC
GAS_DAY = dict(zone=gasday.ROME, day_start=dt.timedelta(hours=6), closing=True)


def at(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


@pytest_twisted.ensureDeferred
async def test_gas_day_buckets_across_both_daylight_saving_changes(backend: Backend) -> None:
    """Each bucket is one gas day, (06:00, 06:00] Rome, 23 hours on 29 March 2026 and 25 on
    25 October: the store's last reading of each is the one sac.gasday says closes it."""
    store = await opened(backend, 1)
    times: list[dt.datetime] = []
    for first in (at(2026, 3, 26, 4), at(2026, 10, 22, 4)):  # every 20 min, 5 days
        times += [first + dt.timedelta(minutes=20 * i) for i in range(5 * 72)]
    # a daily capture exactly at 06:00 Rome closes the day before, whatever the offset
    closes = [gasday.bounds(dt.date(2026, 3, d))[0] for d in (28, 29, 30)]
    closes += [gasday.bounds(dt.date(2026, 10, d))[0] for d in (25, 26)]
    times = sorted(set(times) | set(closes))
    readings = [
        Reading(ldn(0), INDEX, 2, 1000 + i, t, "poll", t, -3, 14) for i, t in enumerate(times)
    ]
    await store.readings.add(readings)

    def expected(lo: dt.datetime, hi: dt.datetime) -> dict[dt.date, Reading]:
        last: dict[dt.date, Reading] = {}
        for r in readings:
            assert r.captured is not None
            if lo <= r.captured < hi:
                last[gasday.closing_day(r.captured)] = r  # in time order: the last wins
        return last

    for lo, hi in ((at(2026, 3, 25), at(2026, 11, 1)), (at(2026, 3, 28, 5), at(2026, 10, 25))):
        found = await store.readings.buckets(ldn(0), INDEX, 2, lo, hi, 86400, **GAS_DAY)
        want = expected(lo, hi)
        assert [r.captured for r in found.readings] == [want[d].captured for d in sorted(want)]
    found = await store.readings.buckets(
        ldn(0), INDEX, 2, at(2026, 3, 25), at(2026, 11, 1), 86400, **GAS_DAY
    )
    by_day = {gasday.closing_day(r.captured): r for r in found.readings if r.captured}
    # the 23-hour day (28 March 06:00 to 29 March 06:00 is 23 h) and the 25-hour one close
    # at their 06:00 capture, which the midnight buckets would have put in the next day
    assert by_day[dt.date(2026, 3, 28)].captured == closes[1] == at(2026, 3, 29, 4)
    assert by_day[dt.date(2026, 10, 24)].captured == closes[3] == at(2026, 10, 25, 5)
    assert gasday.bounds(dt.date(2026, 10, 24))[1] - gasday.bounds(dt.date(2026, 10, 24))[0] == (
        dt.timedelta(hours=25)
    )
    # [start, end) of a gas day and no closing flag: the 06:00 reading opens its day
    opening = await store.readings.buckets(
        ldn(0),
        INDEX,
        2,
        at(2026, 3, 25),
        at(2026, 4, 1),
        86400,
        gasday.ROME,
        dt.timedelta(hours=6),
    )
    assert closes[1] not in [r.captured for r in opening.readings]
    with pytest.raises(InvalidRequest):
        await store.readings.buckets(
            ldn(0), INDEX, 2, at(2026, 3, 25), at(2026, 4, 1), 3600, day_start=dt.timedelta(hours=6)
        )


@pytest_twisted.ensureDeferred
async def test_a_values_changes_not_its_repetitions(backend: Backend) -> None:
    store = await opened(backend, 2)
    values = [0, 0, 0x80, 0x80, 0, 0, 0, 0x100]
    times = [at(2026, 5, 1) + dt.timedelta(hours=h) for h in range(len(values))]
    pdr = Obis("0.0.96.1.10.255")
    await store.readings.add(
        [
            Reading(ldn(0), DIAGNOSTIC, 2, v, t, "cf47", t)
            for v, t in zip(values, times, strict=True)
        ]
        + [Reading(ldn(1), DIAGNOSTIC, 2, 5, t, "cf47", t) for t in times]  # another meter
        + [
            Reading(ldn(0), pdr, 2, None, t, "poll", t, raw=b"\x09\x02" + text)
            for t, text in zip(times[:4], (b"01", b"01", b"02", b"02"), strict=True)
        ]
    )
    changes = await store.readings.changes(ldn(0), DIAGNOSTIC)
    assert [(r.value, r.captured) for r in changes] == [
        (0, times[0]),
        (0x80, times[2]),
        (0, times[4]),
        (0x100, times[7]),
    ]
    assert [r.value for r in await store.readings.changes(ldn(0), DIAGNOSTIC, limit=2)] == [
        0,
        0x100,
    ]
    # the first of a range always counts, even when it repeats the value before the range
    inside = await store.readings.changes(ldn(0), DIAGNOSTIC, start=times[3], end=times[7])
    assert [(r.value, r.captured) for r in inside] == [(0x80, times[3]), (0, times[4])]
    raw = await store.readings.changes(ldn(0), pdr)
    assert [(r.raw, r.captured) for r in raw] == [
        (b"\x09\x0201", times[0]),
        (b"\x09\x0202", times[2]),
    ]
    assert await store.readings.changes(ldn(1), pdr) == []
    with pytest.raises(InvalidRequest):
        await store.readings.changes(ldn(0), DIAGNOSTIC, limit=0)


@pytest_twisted.ensureDeferred
async def test_the_index_at_each_gas_months_start_by_pdr(backend: Backend) -> None:
    """The reading that closes the gas month: the last captured at or before 06:00 Rome of
    the 1st, within the gas day that ends then; none for a meter silent that day."""
    store = await opened(backend, 4)  # PDRs 00000000000000..00000000000003
    await store.meters.add(NewMeter(ldn(4)))  # no PDR
    await store.meters.add(NewMeter(ldn(5), pdr="09999999999999", profile="odd"))
    start = gasday.month_start(2026, 11)  # 1 November 2026, 05:00 UTC (winter time)
    assert start == at(2026, 11, 1, 5)
    hour = dt.timedelta(hours=1)
    rows = [
        # meter 0: hourly the day before, and after the start (not taken)
        *(
            Reading(ldn(0), INDEX, 2, 100 + h, start - h * hour, "poll", start - h * hour, -3, 14)
            for h in range(5)
        ),
        Reading(ldn(0), INDEX, 2, 999, start + hour, "poll", start + hour),
        # meter 1: its last at 07:00 Rome on 31 October (just after the day started)
        Reading(ldn(1), INDEX, 2, 200, start - 23 * hour, "cf48", start - 23 * hour),
        # meter 2: silent on the last gas day (two days before): no index
        Reading(ldn(2), INDEX, 2, 300, start - 30 * hour, "cf48", start - 30 * hour),
        # meter 3: another object only
        Reading(ldn(3), DIAGNOSTIC, 2, 0, start, "cf48", start),
        Reading(ldn(4), INDEX, 2, 400, start, "cf48", start),
        Reading(ldn(5), INDEX, 2, 1, start, "poll", start),  # not its profile's index
        Reading(ldn(5), OTHER_INDEX, 2, 500, start - hour, "poll", start - hour),
    ]
    await store.readings.add(rows)
    page = await store.exports.month_start(
        2026, 11, obis=INDEX, by_profile={"odd": OTHER_INDEX}, limit=100
    )
    assert page.cursor is None
    got = {(r.ldn, r.pdr): (r.reading.value if r.reading else None) for r in page.rows}
    assert got == {
        (ldn(0), "00000000000000"): 100,
        (ldn(1), "00000000000001"): 200,
        (ldn(2), "00000000000002"): None,
        (ldn(3), "00000000000003"): None,
        (ldn(4), None): 400,
        (ldn(5), "09999999999999"): 500,
    }
    first = page.rows[0].reading
    assert first is not None and first.captured == start and first.scaler == -3
    # by PDR, in pages that resume from the cursor
    wanted = ["00000000000001", "09999999999999", "00000000000000", "77777777777777"]
    seen = []
    cursor = None
    while True:
        part = await store.exports.month_start(
            2026,
            11,
            obis=INDEX,
            by_profile={"odd": OTHER_INDEX},
            pdrs=wanted,
            cursor=cursor,
            limit=1,
        )
        seen += [(r.pdr, r.reading.value if r.reading else None) for r in part.rows]
        cursor = part.cursor
        if cursor is None:
            break
    assert seen == [("00000000000000", 100), ("00000000000001", 200), ("09999999999999", 500)]
    assert (await store.exports.month_start(2026, 11, obis=INDEX, pdrs=[])).rows == ()
    other = await store.exports.month_start(2026, 11, obis=INDEX, limit=1)
    assert other.cursor is not None
    with pytest.raises(BadCursor):  # another month's (or PDRs') cursor
        await store.exports.month_start(2026, 12, obis=INDEX, cursor=other.cursor)
    for year, month in ((2026, 13), (1969, 1)):
        with pytest.raises(InvalidRequest):
            await store.exports.month_start(year, month, obis=INDEX)


@pytest_twisted.ensureDeferred
async def test_export_rows_carry_the_meters_pdr(backend: Backend) -> None:
    store = await opened(backend, 2)
    await store.meters.add(NewMeter(ldn(2)))
    t = at(2026, 6, 1, 4)
    await store.readings.add([Reading(ldn(i), INDEX, 2, i, t, "poll", t) for i in range(3)])
    page = await store.exports.readings(t, t + dt.timedelta(hours=1), obis=INDEX, limit=2)
    assert page.pdrs == {ldn(0): "00000000000000", ldn(1): "00000000000001"}
    rest = await store.exports.readings(
        t, t + dt.timedelta(hours=1), obis=INDEX, cursor=page.cursor
    )
    assert rest.pdrs == {ldn(2): None} and rest.cursor is None
