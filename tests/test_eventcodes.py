"""Events in words (docs/uni-ts-11291.md §1.9)."""

from __future__ import annotations

from sac.eventcodes import UNI_TS_EVENTS, Category, EventKind, Severity, describe


def test_the_valve_events_a_close_and_an_enable_log_are_named() -> None:
    assert describe(30).english == "valve closed by command"
    assert describe(30).italian == "valvola chiusa da comando"
    assert describe(110).category is Category.VALVE and describe(110).severity is Severity.INFO
    assert describe(111).name("en") == "opening period begins"
    assert describe(111).name() == "inizio periodo di apertura"  # Italian first


def test_alarms_are_the_events_an_operator_must_see() -> None:
    alarms = {code for code, kind in UNI_TS_EVENTS.items() if kind.severity is Severity.ALARM}
    # a leak, tampering, a battery removed or critical, a valve that will not move, security
    assert {80, 94, 102, 103, 104, 113, 114, 119, 120, 121, 179, 180} <= alarms
    assert not alarms & {12, 30, 31, 81, 90, 110, 122, 128}  # the meter's diary
    assert all(kind.code == code for code, kind in UNI_TS_EVENTS.items())
    assert all(kind.italian and kind.english for kind in UNI_TS_EVENTS.values())


def test_ranges_of_the_table_are_all_there() -> None:
    assert [describe(c).english for c in (96, 101)] == [
        "firmware update (step 1 of 6)",
        "firmware update (step 6 of 6)",
    ]
    assert describe(133).english == "key changed: KEYM"
    assert describe(128).category is Category.KEY


def test_unknown_and_manufacturer_codes_are_said_so_and_a_profile_names_its_own() -> None:
    assert describe(55).english == "unknown (code 55)" and describe(55).category is Category.UNKNOWN
    assert describe(55).italian == "sconosciuto (codice 55)"
    assert describe(200).english == "manufacturer's event (code 200)"
    own = {200: EventKind(200, "door open", "sportello aperto", Category.TAMPER, Severity.ALARM)}
    assert describe(200, own).english == "door open"
    assert describe(30, own) == describe(30)
