"""Issue 22 proof: each meter setting's SET-Request as sac encodes it, against the same value
built with gurux-dlms 1.0.203's own COSEM object classes and written by gurux's client.

Every case states a value's *meaning* twice, once for each side: sac gets the operator's
text (``Setting.value_of(text, profile)`` -> ``SetRequestNormal``); gurux gets its object
model (``GXDLMSActionSchedule.executionTime``, ``GXDLMSPushSetup``'s fields,
``GXDLMSRegisterMonitor.thresholds``, ``GXDLMSData`` with its data type, ``GXDLMSClock.time``)
and ``GXDLMSClient.write(obj, attribute)`` makes the request: logical-name referencing,
WRAPPER, client 1 -> server 1, Standard.ITALY and ``useUtc2NormalTime`` = the profile's
inverted deviation (the Italian sign, docs/uni-ts-11291.md §1.2); gurux's wrapper header is
checked and stripped.  Nothing of sac's encodes on gurux's side (unlike
``gurux_peer.gx_set_request``, whose containers the peer's own helper writes).  Both APDUs
must be equal byte for byte; gurux then decodes ours (``gx_decode_apdu``) and must read the
service, invoke id, class id, logical name and attribute of the setting's object, and the
value's types as the Blue Book gives them for that attribute.

Gurux's object model expresses all of the settings; three things are set explicitly, as it
allows:

* a date-time's day of week: ``GXDateTime(datetime)`` writes 0xFF (not specified) where sac
  writes the weekday, so a case sets ``dayOfWeek`` (both are valid date-times);
* a daily window edge (IC 40 communication_window: array of structure {start_time
  octet-string(12), end_time octet-string(12)}) is a date-time whose date, weekday,
  deviation and clock status are not specified: ``DateTimeSkips`` says so;
* the push setup is version 0 (UNI/TS: push_object_list entries of 4 fields); gurux
  defaults to version 2.

IC 62 (compact data, what a push sends) has no gurux class: gurux's own object factory gives
a plain ``GXDLMSObject(62)``, which is what its push_object_list takes.

What this found: sac wrote clock status 00 with a summer-time (CEST) date-time, where
gurux writes bit 7, daylight_saving_active (Blue Book clock_status), as the deviation says;
sac's ``CosemDateTime.from_datetime`` now sets it (the summer cases below).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import pytest

pytest.importorskip("gurux_dlms")

from gurux_dlms import (
    GXDateTime,
    GXDLMSClient,
    GXStructure,
    GXUInt8,
    GXUInt16,
    GXUInt32,
)
from gurux_dlms.enums import (
    Authentication,
    DataType,
    DateTimeSkips,
    InterfaceType,
    ObjectType,
    Standard,
)
from gurux_dlms.objects import (
    GXDLMSActionSchedule,
    GXDLMSCaptureObject,
    GXDLMSClock,
    GXDLMSData,
    GXDLMSPushSetup,
    GXDLMSRegisterMonitor,
)
from gurux_dlms.objects.enums import MessageType, ServiceType

from sac.dlms.descriptors import AttributeDescriptor
from sac.dlms.xdlms import SetRequestNormal
from sac.profiles import discover_profiles
from sac.profiles.settings import SESSION_TIMEOUTS, setting_of, setting_ref
from tests.conftest import vector
from tests.interop.gurux_peer import gx_decode_apdu, strip_wrapper

pytestmark = pytest.mark.interop

GENERIC, HONEYWELL = "uni-ts-11291-12-2", "honeywell-ei7"
IIP = 0xC1  # gurux's client default: invoke id 1, high priority, confirmed
ROME = ZoneInfo("Europe/Rome")
_ANY_DAY = DateTimeSkips.YEAR | DateTimeSkips.MONTH | DateTimeSkips.DAY
_ANY_DAY |= DateTimeSkips.DAY_OF_WEEK
_EDGE = _ANY_DAY | DateTimeSkips.DEVITATION | DateTimeSkips.STATUS  # gurux's spelling

Build = Callable[[str], tuple[Any, int]]  # logical name -> (gurux COSEM object, attribute)


# --- gurux's side: its COSEM objects, from the meaning ------------------------------------
def _data(data_type: DataType, value: Any) -> Build:
    """IC 1 data, attribute 2 (value), of the given type."""

    def build(ln: str) -> tuple[Any, int]:
        obj = GXDLMSData(ln)
        obj.setDataType(2, data_type)
        obj.value = value
        return obj, 2

    return build


def _timeouts(*seconds: int) -> Build:
    """IC 1 value: structure of double-long-unsigned (HW-EI7 session timeouts)."""
    value = GXStructure()
    value.extend(GXUInt32(s) for s in seconds)
    return _data(DataType.STRUCTURE, value)


def _thresholds(kind: type, limit: int) -> Build:
    """IC 21 register monitor, attribute 2 (thresholds): array of the monitored type."""

    def build(ln: str) -> tuple[Any, int]:
        obj = GXDLMSRegisterMonitor(ln)
        obj.setDataType(2, DataType.ARRAY)  # gurux wants a type for thresholds
        obj.thresholds = [kind(limit)]
        return obj, 2

    return build


def _entry(hour: int, minute: int, date: dt.date | None = None) -> Any:
    """One execution_time entry: at hour:minute, every day (date None) or on ``date``
    (weekday not specified, as the public vector has it)."""
    when = GXDateTime(dt.datetime.combine(date or dt.date(2000, 1, 1), dt.time(hour, minute)))
    when.skip |= DateTimeSkips.DAY_OF_WEEK if date else _ANY_DAY
    return when


def _schedule(*entries: tuple[int, int]) -> Build:
    """IC 22 single action schedule, attribute 4 (execution_time)."""

    def build(ln: str) -> tuple[Any, int]:
        obj = GXDLMSActionSchedule(ln)
        obj.executionTime = [_entry(h, m) for h, m in entries]
        return obj, 4

    return build


def _push(attribute: int, **fields: Any) -> Build:
    """IC 40 push setup, version 0, with ``fields`` set; written at ``attribute``."""

    def build(ln: str) -> tuple[Any, int]:
        obj = GXDLMSPushSetup(ln)
        obj.version = 0
        for name, value in fields.items():
            setattr(obj, name, value)
        return obj, attribute

    return build


def _pushed_frame(template: int) -> Build:
    """push_object_list: the compact data object of ``template`` (IC 62, attribute 2)."""
    compact = GXDLMSClient.createObject(ObjectType.COMPACT_DATA)
    compact.logicalName = f"0.0.66.0.{template}.255"
    return _push(2, pushObjectList=[(compact, GXDLMSCaptureObject(2, 0))])


def _destination(service: ServiceType, address: str) -> Build:
    return _push(3, service=service, destination=address, message=MessageType.COSEM_APDU)


def _edge(hour: int, minute: int) -> Any:
    when = GXDateTime(dt.datetime(2000, 1, 1, hour, minute))
    when.skip |= _EDGE
    return when


def _windows(*windows: tuple[int, int, int, int]) -> Build:
    return _push(4, communicationWindow=[(_edge(a, b), _edge(c, d)) for a, b, c, d in windows])


def _italian(*when: int) -> Any:
    """An Italian local time as gurux's date-time, with its weekday."""
    local = dt.datetime(*when, tzinfo=ROME)
    value = GXDateTime(local)
    value.dayOfWeek = local.isoweekday()
    return value


def _clock(*when: int) -> Build:
    """IC 8 clock, attribute 2 (time)."""

    def build(ln: str) -> tuple[Any, int]:
        obj = GXDLMSClock(ln)
        obj.time = _italian(*when)
        return obj, 2

    return build


def gurux_write(obj: Any, attribute: int, inverted_deviation: bool = True) -> bytes:
    """gurux's SET-Request for ``obj``'s ``attribute``, the wrapper (1 -> 1) stripped."""
    client = GXDLMSClient(True, 1, 1, Authentication.NONE, None, InterfaceType.WRAPPER)
    client.settings.standard = Standard.ITALY
    client.useUtc2NormalTime = inverted_deviation
    with contextlib.redirect_stdout(io.StringIO()):
        frames = client.write(obj, attribute)
    assert len(frames) == 1, f"gurux produced {len(frames)} frames"
    frame = bytes(frames[0])
    assert frame[2:6] == bytes.fromhex("00010001"), frame[:8].hex()  # client 1 -> server 1
    return strip_wrapper(frame)


# --- the cases ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    key: str  # the setting
    text: str  # what the operator writes
    build: Build  # the same meaning in gurux's objects
    types: str  # the value's types as gurux decodes ours (Blue Book)
    profile: str = GENERIC


def _times(n: int) -> str:
    return "array[" + ", ".join(["structure[octet-string(4), octet-string(5)]"] * n) + "]"


def _window_types(n: int) -> str:
    return "array[" + ", ".join(["structure[octet-string(12), octet-string(12)]"] * n) + "]"


_FRAME = "array[structure[long-unsigned, octet-string(6), integer, long-unsigned]]"
_LU, _DT = "long-unsigned", "octet-string(12)"
_TCP, _UDP = ServiceType.TCP, ServiceType.UDP
# fmt: off
CASES = [
    Case("pdr", "12345678901234", _data(DataType.STRING, "12345678901234"), "visible-string(14)"),
    Case("pdr", "00000000000000", _data(DataType.STRING, "0" * 14), "visible-string(14)"),
    Case("clock", "2025-01-15 10:00", _clock(2025, 1, 15, 10, 0), _DT),
    Case("clock", "2025-07-15 10:00", _clock(2025, 7, 15, 10, 0), _DT),  # summer: DST bit
    Case("clock", "2025-10-26 02:30", _clock(2025, 10, 26, 2, 30), _DT),  # first 02:30, CEST
    Case("clock", "2025-10-26 03:30", _clock(2025, 10, 26, 3, 30), _DT),  # after: CET
    Case("push_times", "05:00", _schedule((5, 0)), _times(1)),
    Case("push_times", "17:30, 05:00", _schedule((5, 0), (17, 30)), _times(2)),  # sac sorts
    Case("push_times", "00:00, 06:15, 12:30, 23:59",
         _schedule((0, 0), (6, 15), (12, 30), (23, 59)), _times(4)),
    Case("push_frame", "47", _pushed_frame(47), _FRAME),
    Case("push_frame", "51", _pushed_frame(51), _FRAME),
    Case("push_destination", "tcp://sac.example.it:4059",
         _destination(_TCP, "sac.example.it:4059"), "structure[enum, octet-string(19), enum]"),
    Case("push_destination", "udp://10.0.0.1:4059",
         _destination(_UDP, "10.0.0.1:4059"), "structure[enum, octet-string(13), enum]"),
    Case("push_destination", "tcp://[2001:db8::1]:65535",
         _destination(_TCP, "[2001:db8::1]:65535"), "structure[enum, octet-string(19), enum]"),
    Case("push_window", "", _windows(), "array[]"),
    Case("push_window", "06:00-08:30", _windows((6, 0, 8, 30)), _window_types(1)),
    Case("push_window", "22:00-02:00, 12:00-12:01",
         _windows((22, 0, 2, 0), (12, 0, 12, 1)), _window_types(2)),
    Case("push_randomisation", "0", _push(5, randomisationStartInterval=0), _LU),
    Case("push_randomisation", "3600", _push(5, randomisationStartInterval=3600), _LU),
    Case("billing_period_start", "2025-01-01 06:00", _data(DataType.OCTET_STRING,
         _italian(2025, 1, 1, 6, 0)), _DT),
    Case("billing_period_start", "2026-08-01 06:00", _data(DataType.OCTET_STRING,
         _italian(2026, 8, 1, 6, 0)), _DT),
    Case("valve_configuration", "0", _data(DataType.UINT16, 0), _LU),
    Case("valve_configuration", "65535", _data(DataType.UINT16, 0xFFFF), _LU),
    Case("valve_pin", "0", _data(DataType.UINT16, 0), _LU),
    Case("valve_pin", "9999", _data(DataType.UINT16, 9999), _LU),
    Case("opening_validity", "1", _data(DataType.UINT16, 1), _LU),
    Case("opening_validity", "65535", _data(DataType.UINT16, 65535), _LU),
    Case("no_communication_days", "30", _thresholds(GXUInt16, 30), "array[long-unsigned]"),
    Case("no_communication_days", "3650", _thresholds(GXUInt16, 3650), "array[long-unsigned]"),
    Case("tamper_attempts", "1", _thresholds(GXUInt8, 1), "array[unsigned]"),
    Case("tamper_attempts", "255", _thresholds(GXUInt8, 255), "array[unsigned]"),
    Case("session_timeouts", "600, 60, 120", _timeouts(600, 60, 120),
         "structure[double-long-unsigned, double-long-unsigned, double-long-unsigned]",
         HONEYWELL),
    Case("session_timeouts", "86400, 1, 86400", _timeouts(86400, 1, 86400),
         "structure[double-long-unsigned, double-long-unsigned, double-long-unsigned]",
         HONEYWELL),
]
# fmt: on
_IDS = [f"{c.key}:{c.text or 'empty'}" for c in CASES]


@pytest.fixture(scope="module")
def registry() -> Any:
    return discover_profiles().registry


def _ours(case: Case, profile: Any) -> tuple[bytes, Any]:
    """sac's SET-Request for the case's text, and the attribute it writes."""
    setting = setting_of(profile, case.key)
    assert setting is not None, f"{profile.name} has no setting {case.key}"
    ref = setting_ref(profile, setting)
    value, _text = setting.value_of(case.text, profile)
    descriptor = AttributeDescriptor(ref.class_id, ref.obis, ref.attribute)
    return SetRequestNormal(IIP, descriptor, value).to_bytes(), ref


def _theirs(case: Case, profile: Any, ln: str) -> tuple[bytes, Any, int]:
    obj, attribute = case.build(ln)
    return gurux_write(obj, attribute, profile.inverted_deviation), obj, attribute


@pytest.mark.parametrize("case", CASES, ids=_IDS)
def test_set_request_as_gurux_writes_it(case: Case, registry: Any) -> None:
    """Byte for byte: sac's request for the text == gurux's for its object holding the same."""
    profile = registry[case.profile]
    ours, ref = _ours(case, profile)
    theirs, obj, attribute = _theirs(case, profile, str(ref.obis))
    assert (obj.objectType, attribute) == (ref.class_id, ref.attribute)  # the right object
    assert ours.hex() == theirs.hex()


def _types(value: dict[str, Any]) -> str:
    """A gurux-decoded typed value's types: ``array[structure[enum, octet-string(3)]]``."""
    kind, inner = value["type"], value["value"]
    if kind in ("array", "structure"):
        return f"{kind}[{', '.join(_types(v) for v in inner)}]"
    if kind == "octet-string":
        return f"{kind}({len(inner) // 2})"
    if kind == "visible-string":
        return f"{kind}({len(inner)})"
    return str(kind)


@pytest.mark.parametrize("case", CASES, ids=_IDS)
def test_gurux_reads_our_set_request(case: Case, registry: Any) -> None:
    """gurux decodes sac's request: the setting's object and attribute, the Blue Book types."""
    profile = registry[case.profile]
    ours, ref = _ours(case, profile)
    read = gx_decode_apdu(ours)
    assert read["service"] == "set-request-normal"
    assert read["invoke_id_and_priority"] == IIP
    assert (read["class_id"], read["obis"], read["attribute"]) == (
        ref.class_id,
        str(ref.obis),
        ref.attribute,
    )
    assert _types(read["value"]) == case.types


def test_every_setting_has_a_case(registry: Any) -> None:
    """A setting added to the generic profile (or to HW-EI7) is not proven until it has one."""
    generic = {s.key for s in registry[GENERIC].settings}
    honeywell = {s.key for s in registry[HONEYWELL].settings}
    assert honeywell - generic == {SESSION_TIMEOUTS.key}
    assert {c.key for c in CASES if c.profile == GENERIC} == generic
    assert {c.key for c in CASES if c.profile == HONEYWELL} == {SESSION_TIMEOUTS.key}


def test_gurux_side_makes_the_public_vector() -> None:
    """The gurux side is set up as TV5-SET-VALVE-TIME was generated (its "source"): the same
    objects and client settings give its bytes."""
    tv5 = vector("TV5-SET-VALVE-TIME")
    schedule = GXDLMSActionSchedule(tv5["expected"]["logical_name"])
    schedule.executionTime = [_entry(10, 0, dt.date(2025, 1, 15))]
    assert gurux_write(schedule, 4).hex() == tv5["hex"]


def test_the_deviation_sign_is_compared(registry: Any) -> None:
    """The clock's bytes would differ with gurux's DLMS sign (useUtc2NormalTime off): in the
    deviation only, CET +60 (Italian) against -60 (Blue Book)."""
    profile = registry[GENERIC]
    assert profile.inverted_deviation
    case = next(c for c in CASES if c.key == "clock")
    ours, ref = _ours(case, profile)
    obj, attribute = case.build(str(ref.obis))
    dlms = gurux_write(obj, attribute, inverted_deviation=False)
    differ = [i for i, (a, b) in enumerate(zip(ours, dlms, strict=True)) if a != b]
    assert differ == [len(ours) - 3, len(ours) - 2]  # the two deviation bytes before status
    assert (ours[-3:-1], dlms[-3:-1]) == (b"\x00\x3c", b"\xff\xc4")
