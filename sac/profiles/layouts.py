"""The UNI/TS 11291-12-2 compact frame layouts known from public sources
(docs/uni-ts-11291.md §2.4).

Pure data: profiles (sac.plugins) pick the ones their meters send, and add their own.  The
fields name the objects where the generic profile keeps them (``sac.profiles.STANDARD_OBJECTS``,
the one catalogue of OBIS codes); the codec that reads and writes them is
:mod:`sac.dlms.compact`.
Sources and confidence: CF47/CF48 [C] (Honeywell EI7 production parser and oneGasMeter
agree); CF49's snapshot block is kept raw (its 50 bytes are undecoded by every public
source); CF51 [C-ish]; CF30 [S] (Honeywell EI7 only, checked on its test vector TV2).
"""

from __future__ import annotations

from sac.dlms.compact import CompactField, CompactLayout, fld
from sac.profiles import STANDARD_OBJECTS

__all__ = ["CF30", "CF47", "CF48", "CF49", "CF51", "STANDARD_LAYOUTS"]


def _ln(quantity: str) -> str:
    """Where the generic profile keeps ``quantity`` (the one catalogue: sac.profiles)."""
    return str(STANDARD_OBJECTS[quantity].obis)


UNIX_TIME = _ln("unix_time")
VALVE = _ln("valve")
INDEX = _ln("converted_volume_index")
INDEX_UNDER_ALARM = _ln("converted_volume_index_under_alarm")
DAILY_DIAGNOSTIC = _ln("daily_diagnostic")
CURRENT_DIAGNOSTIC = _ln("current_diagnostic")
MANAGEMENT_FC_ONLINE = _ln("frame_counter_management")

# one entry of the daily load profile (daily_profile): 14 bytes
DAILY_ENTRY: tuple[CompactField, ...] = (
    fld("unix_time", "u32", UNIX_TIME),
    fld("daily_diagnostic", "u16", DAILY_DIAGNOSTIC),
    fld("converted_volume_index", "u32", INDEX),
    fld("converted_volume_index_under_alarm", "u32", INDEX_UNDER_ALARM),
)

_PUSH_HEAD: tuple[CompactField, ...] = (
    fld("unix_time", "u32", UNIX_TIME),
    fld("pp4_network_status", "u16", _ln("network_status")),
    fld("valve_output_state", "bool", VALVE, 2),
    fld("valve_control_state", "enum", VALVE, 3),
    fld("metrological_event_counter", "u16", _ln("metrological_event_counter")),
    fld("event_counter", "u16", _ln("event_counter")),
    fld("daily_diagnostic", "u16", DAILY_DIAGNOSTIC),
    fld("converted_volume_index", "u32", INDEX),
    fld("converted_volume_index_under_alarm", "u32", INDEX_UNDER_ALARM),
)
_BILLING_COUNTER = fld("billing_period_counter", "u8", _ln("billing_period_counter"))
_MGMT_FC = fld("management_frame_counter", "u32", MANAGEMENT_FC_ONLINE)
_SPARE = fld("spare", "octet-string", _ln("spare"))
_DAILY_PROFILE = fld("daily_load_profile", "entries", _ln("daily_profile"), entries=DAILY_ENTRY)

CF47 = CompactLayout(47, "CF47 push content A", (*_PUSH_HEAD, _BILLING_COUNTER, _MGMT_FC, _SPARE))

CF48 = CompactLayout(
    48,
    "CF48 push content B",
    (*_PUSH_HEAD, _DAILY_PROFILE, _BILLING_COUNTER, _MGMT_FC, _SPARE),
)

CF49 = CompactLayout(
    49,
    "CF49 push content C",
    (
        *_PUSH_HEAD,
        _DAILY_PROFILE,
        _BILLING_COUNTER,
        # snapshot period data (billing_snapshots): 50 bytes no public source decodes
        fld("snapshot_period_data", "bytes", _ln("billing_snapshots"), size=50),
        _MGMT_FC,
        _SPARE,
    ),
)

CF51 = CompactLayout(
    51,
    "CF51 frame counters",
    (
        fld("logical_device_name", "visible-string", _ln("ldn")),
        _MGMT_FC,
        fld("management_frame_counter_offline", "u32", _ln("frame_counter_management_offline")),
        fld("guarantor_frame_counter", "u32", _ln("frame_counter_guarantor")),
        fld("installer_frame_counter", "u32", _ln("frame_counter_installer")),
    ),
)

CF30 = CompactLayout(
    30,
    "CF30 (Honeywell EI7)",
    (
        fld("unix_time", "u32", UNIX_TIME),
        fld("session_max_duration", "u32"),
        fld("inactivity_timeout", "u32"),
        fld("network_attach_timeout", "u32"),
        fld("valve_output_state", "bool", VALVE, 2),
        fld("valve_control_state", "enum", VALVE, 3),
        _MGMT_FC,
        fld("metrological_event_counter", "u16", _ln("metrological_event_counter")),
        fld("event_counter", "u16", _ln("event_counter")),
        fld("current_diagnostic", "u16", CURRENT_DIAGNOSTIC),
        fld("batteries_in_use", "u8"),
        fld("batteries_present", "u8"),
        fld("primary_battery_residual_pct", "u8", _ln("battery_autonomy")),
        fld("secondary_battery_residual_pct", "u8", _ln("battery_autonomy_secondary")),
        fld("volume_scaler", "i8", INDEX, 3),
        fld("volume_unit", "enum", INDEX, 3),
        fld("temperature_scaler", "i8", _ln("temperature"), 3),
        fld("temperature_unit", "enum", _ln("temperature"), 3),
        fld("daily_readings", "entries", _ln("daily_profile"), entries=DAILY_ENTRY),
        fld("interval_data", "entries", _ln("interval_profile"), entries=DAILY_ENTRY),
    ),
)

STANDARD_LAYOUTS: dict[int, CompactLayout] = {
    layout.template_id: layout for layout in (CF30, CF47, CF48, CF49, CF51)
}
