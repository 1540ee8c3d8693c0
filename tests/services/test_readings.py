"""Profile buffers and logbooks as a meter answers them: anything but an array of rows of
the right width is refused with a DecodeError (a poll that fails cleanly), never a crash.
Found by the polling-client fuzzer (tests/fuzz): a buffer answered as a boolean raised a
TypeError out of the poll."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from sac.dlms import Obis
from sac.dlms.axdr import (
    Array,
    DoubleLongUnsigned,
    Long64Unsigned,
    LongUnsigned,
    Structure,
    encode_data,
)
from sac.errors import DecodeError
from sac.eventcodes import Category, EventKind, Severity
from sac.services.readings import Capture, rows_to_events, rows_to_readings

NOW = dt.datetime(2026, 11, 21, tzinfo=dt.UTC)
LOGBOOK = Obis("7.0.99.98.0.255")
EVENT_COLUMNS = (
    Capture(1, Obis("0.0.1.1.0.255"), 2),
    Capture(1, Obis("0.0.96.11.0.255"), 2),
    Capture(1, Obis("0.0.96.15.0.255"), 2),
)
PROFILE_COLUMNS = (Capture(1, Obis("0.0.1.1.0.255"), 2), Capture(3, Obis("7.0.13.2.0.255"), 2))
T = 1_790_000_000


def events(rows: Any) -> list[Any]:
    return rows_to_events(
        "L", LOGBOOK, EVENT_COLUMNS, rows, inverted_deviation=False, received=NOW, source="poll"
    )


def readings(rows: Any) -> list[Any]:
    return rows_to_readings(
        "L", PROFILE_COLUMNS, rows, scalers={}, inverted_deviation=False, received=NOW,
        source="poll",
    )  # fmt: skip


def test_good_rows_are_read() -> None:
    [event] = events(Array([Structure([T, 7, 3])]))
    assert (event.code, event.counter) == (7, 3)
    assert len(readings(Array([Structure([T, 1234]), Structure([T + 86400, 1300])]))) == 2


@pytest.mark.parametrize(
    "rows",
    [
        True,  # the fuzzer's case
        5,
        b"\x01\x02",
        None,
        Structure([T, 7, 3]),  # a row where the buffer should be
        Array([5]),  # a row that is not a structure
        Array([b"\x00\x01\x02"]),  # nor is an octet-string of the right length
        Array([Structure([T])]),  # too narrow
    ],
    ids=repr,
)
def test_a_buffer_that_is_not_rows_is_refused(rows: Any) -> None:
    with pytest.raises(DecodeError):
        events(rows)
    with pytest.raises(DecodeError):
        readings(rows)


@pytest.mark.parametrize("code", [b"\x07", -1, 1 << 40, True, 1.5])
def test_an_event_code_the_store_cannot_keep_is_refused(code: Any) -> None:
    with pytest.raises(DecodeError):
        events(Array([Structure([T, code, 3])]))
    with pytest.raises(DecodeError):
        events(Array([Structure([T, 7, code])]))


def test_a_bad_row_is_said_with_its_bytes_and_skipped_the_others_kept() -> None:
    """In a session (``rejected`` given) one entry that does not decode costs that entry
    only: it is said, with its A-XDR bytes, and the rest of the logbook is stored."""
    rejected: list[str] = []
    # a code the store cannot keep, as the meter sent it (typed: its bytes say so)
    huge = Structure([DoubleLongUnsigned(T + 1), Long64Unsigned(1 << 40), LongUnsigned(4)])
    narrow = Structure([DoubleLongUnsigned(T + 2)])
    rows = Array([Structure([T, 7, 3]), huge, narrow, Structure([T + 3, 30, 5])])
    found = rows_to_events(
        "L", LOGBOOK, EVENT_COLUMNS, rows, inverted_deviation=False, received=NOW,
        source="session", rejected=rejected,
    )  # fmt: skip
    assert [(e.code, e.counter) for e in found] == [(7, 3), (30, 5)]
    assert len(rejected) == 2
    assert rejected[0].startswith("a logbook entry: an event code Long64Unsigned(1099511627776)")
    assert rejected[0].endswith(f"skipped: {encode_data(huge).hex()}")
    assert (
        rejected[1]
        == f"a logbook row of 1 values for 3 columns, skipped: {encode_data(narrow).hex()}"
    )
    profile: list[str] = []
    kept = rows_to_readings(
        "L", PROFILE_COLUMNS, Array([Structure([T, 1234]), Structure([T + 86400])]),
        scalers={}, inverted_deviation=False, received=NOW, source="session", rejected=profile,
    )  # fmt: skip
    assert [r.value for r in kept] == [1234] and len(profile) == 1


def test_events_are_classed_by_the_profile_first() -> None:
    rows = Array([Structure([T, 80, 1]), Structure([T, 200, 2]), Structure([T, 12, 3])])
    plain = {e.code: (e.severity, e.category) for e in events(rows)}
    assert plain == {
        80: ("alarm", "tamper"),
        200: ("info", "unknown"),  # a manufacturer's code nobody named
        12: ("info", "clock"),
    }
    own = {200: EventKind(200, "valve stuck", "valvola bloccata", Category.VALVE, Severity.ALARM)}
    classed = rows_to_events(
        "L", LOGBOOK, EVENT_COLUMNS, rows, inverted_deviation=False, received=NOW, source="poll",
        kinds=own,
    )  # fmt: skip
    assert {e.code: e.severity for e in classed} == {80: "alarm", 200: "alarm", 12: "info"}
    assert next(e for e in classed if e.code == 200).category == "valve"
