"""The UNI/TS 11291-12-2 compact frame layouts known from public sources
(docs/uni-ts-11291.md §2.4).

Pure data: profiles (sac.plugins) pick the ones their meters send, and add their own.
Sources and confidence: CF47/CF48 [C] (Honeywell EI7 production parser and oneGasMeter
agree); CF49's snapshot block is kept raw (its 50 bytes are undecoded by every public
source); CF51 [C-ish]; CF30 [S] (Honeywell EI7 only, checked on its test vector TV2).
"""

from __future__ import annotations

from sac.dlms.compact import CompactField, CompactLayout, fld

__all__ = ["CF30", "CF47", "CF48", "CF49", "CF51", "STANDARD_LAYOUTS"]

UNIX_TIME = "0.0.1.1.0.255"
VALVE = "0.0.96.3.10.255"
INDEX = "7.0.13.2.0.255"
INDEX_UNDER_ALARM = "7.0.12.2.0.255"
DAILY_DIAGNOSTIC = "7.1.96.5.1.255"
CURRENT_DIAGNOSTIC = "7.0.96.5.1.255"
MANAGEMENT_FC_ONLINE = "0.0.43.1.1.255"

# one entry of the daily load profile (7.0.99.99.3.255): 14 bytes
DAILY_ENTRY: tuple[CompactField, ...] = (
    fld("unix_time", "u32", UNIX_TIME),
    fld("daily_diagnostic", "u16", DAILY_DIAGNOSTIC),
    fld("converted_volume_index", "u32", INDEX),
    fld("converted_volume_index_under_alarm", "u32", INDEX_UNDER_ALARM),
)

_PUSH_HEAD: tuple[CompactField, ...] = (
    fld("unix_time", "u32", UNIX_TIME),
    fld("pp4_network_status", "u16", "0.1.96.5.4.255"),
    fld("valve_output_state", "bool", VALVE, 2),
    fld("valve_control_state", "enum", VALVE, 3),
    fld("metrological_event_counter", "u16", "0.0.96.15.1.255"),
    fld("event_counter", "u16", "0.0.96.15.2.255"),
    fld("daily_diagnostic", "u16", DAILY_DIAGNOSTIC),
    fld("converted_volume_index", "u32", INDEX),
    fld("converted_volume_index_under_alarm", "u32", INDEX_UNDER_ALARM),
)
_BILLING_COUNTER = fld("billing_period_counter", "u8", "7.0.0.1.0.255")
_MGMT_FC = fld("management_frame_counter", "u32", MANAGEMENT_FC_ONLINE)
_SPARE = fld("spare", "octet-string", "0.0.94.39.40.255")
_DAILY_PROFILE = fld("daily_load_profile", "entries", "7.0.99.99.3.255", entries=DAILY_ENTRY)

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
        # snapshot period data (7.0.98.11.0.255): 50 bytes no public source decodes
        fld("snapshot_period_data", "bytes", "7.0.98.11.0.255", size=50),
        _MGMT_FC,
        _SPARE,
    ),
)

CF51 = CompactLayout(
    51,
    "CF51 frame counters",
    (
        fld("logical_device_name", "visible-string", "0.0.42.0.0.255"),
        _MGMT_FC,
        fld("management_frame_counter_offline", "u32", "0.1.43.1.1.255"),
        fld("guarantor_frame_counter", "u32", "0.0.43.1.48.255"),
        fld("installer_frame_counter", "u32", "0.0.43.1.3.255"),
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
        fld("metrological_event_counter", "u16", "0.0.96.15.1.255"),
        fld("event_counter", "u16", "0.0.96.15.2.255"),
        fld("current_diagnostic", "u16", CURRENT_DIAGNOSTIC),
        fld("batteries_in_use", "u8"),
        fld("batteries_present", "u8"),
        fld("primary_battery_residual_pct", "u8", "0.0.96.6.6.255"),
        fld("secondary_battery_residual_pct", "u8", "0.1.96.6.6.255"),
        fld("volume_scaler", "i8", INDEX, 3),
        fld("volume_unit", "enum", INDEX, 3),
        fld("temperature_scaler", "i8", "7.0.41.0.0.255", 3),
        fld("temperature_unit", "enum", "7.0.41.0.0.255", 3),
        fld("daily_readings", "entries", "7.0.99.99.3.255", entries=DAILY_ENTRY),
        fld("interval_data", "entries", "7.0.99.99.1.255", entries=DAILY_ENTRY),
    ),
)

STANDARD_LAYOUTS: dict[int, CompactLayout] = {
    layout.template_id: layout for layout in (CF30, CF47, CF48, CF49, CF51)
}
