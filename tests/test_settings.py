"""The meter's settings as data (sac.profiles.settings): each generic setting's text and
typed JSON both ways, its bounds and shape refused with the reason, and the commands that
carry them checked before anything is queued."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest

from sac.dlms.axdr import Array, LongUnsigned, Unsigned, encode_data
from sac.dlms.typedjson import to_json
from sac.profiles import MeterProfile, discover_profiles
from sac.profiles.settings import (
    UNI_TS_SETTINGS,
    SettingError,
    setting_of,
    without,
)
from sac.services.commands import CommandError, validate

REGISTRY = discover_profiles().registry
GENERIC = REGISTRY["uni-ts-11291-12-2"]
HONEYWELL = REGISTRY["honeywell-ei7"]
NOW = dt.datetime(2026, 12, 3, 12, tzinfo=dt.UTC)

# (setting, text as an operator writes it, the text it is shown as, its A-XDR bytes)
GOOD = [
    ("pdr", "01234567890123", "01234567890123", "0a0e3031323334353637383930313233"),
    ("push_times", " 17:30,05:00", "05:00, 17:30",
     "010202020904050000000905ffffffffff020209041"
     "11e00000905ffffffffff"),
    ("push_frame", "48", "48", "010102041200""3e09060000420030ff0f02120000"),
    ("push_destination", "udp://sac.example.it:4059", "udp://sac.example.it:4059",
     "0203160109137361632e6578616d706c652e69743a34303539""1600"),
    ("push_window", "22:00-02:00", "22:00-02:00",
     "0101020209""0cffffffffff16000000""8000ff""090cffffffffff02000000""8000ff"),
    ("push_randomisation", "600", "600", "120258"),
    ("billing_period_start", "2027-01-01 06:00", "2027-01-01 06:00",
     "090c07eb010105060000000""03c00"),
    ("valve_pin", "0042", "42", "12002a"),
    ("no_communication_days", "30", "30", "0101""12001e"),
    ("tamper_attempts", "5", "5", "0101""1105"),
]  # fmt: skip


@pytest.mark.parametrize(("key", "text", "shown", "hex_"), GOOD, ids=[g[0] for g in GOOD])
def test_each_setting_from_text_and_typed_json_to_the_same_bytes(
    key: str, text: str, shown: str, hex_: str
) -> None:
    setting = setting_of(GENERIC, key)
    assert setting is not None
    value, as_text = setting.value_of(text, GENERIC)
    assert as_text == shown
    assert encode_data(value).hex() == hex_
    # the same value in typed JSON (what the API takes) passes the same checks
    again, again_text = setting.value_of(to_json(value), GENERIC)
    assert encode_data(again) == encode_data(value) and again_text == shown


BAD = [
    ("pdr", "1234", "14 digits"),
    ("push_times", "25:00", "not a time of day"),
    ("push_times", "01:00,02:00,03:00,04:00,05:00", "1 to 4 times"),
    ("push_times", "", "1 to 4 times"),
    ("push_frame", "30", "no compact frame 30 (it has 47, 48, 49, 51)"),
    ("push_destination", "http://x:80", "not tcp://host:port"),
    ("push_destination", "tcp://x:99999", "port '99999'"),
    ("push_window", "10:00-10:00", "empty window"),
    ("push_randomisation", "3601", "not in 0..3600"),
    ("billing_period_start", "2027-13-01 06:00", "not YYYY-MM-DD HH:MM"),
    ("valve_pin", "10000", "not in 0..9999"),
    ("valve_pin", "12a", "not a whole number"),
    ("no_communication_days", "0", "not in 1..3650"),
]


@pytest.mark.parametrize(("key", "text", "words"), BAD, ids=[f"{b[0]}-{b[1]}" for b in BAD])
def test_a_value_out_of_bounds_or_shape_is_refused_with_the_reason(
    key: str, text: str, words: str
) -> None:
    setting = setting_of(GENERIC, key)
    assert setting is not None
    with pytest.raises(SettingError, match=re.escape(words)):
        setting.value_of(text, GENERIC)


@pytest.mark.parametrize(
    ("key", "typed", "words"),
    [
        ("valve_pin", to_json(Unsigned(5)), "not of this setting's shape"),
        ("valve_pin", to_json(LongUnsigned(10_000)), "not in 0..9999"),
        ("tamper_attempts", to_json(Array([Unsigned(1), Unsigned(2)])), "array of one value"),
        (
            "push_times",
            {"type": "array", "value": [{"type": "long", "value": 1}]},
            "an execution_time entry",
        ),
        ("pdr", {"type": "visible-string"}, "must be an object"),
    ],
)
def test_a_typed_value_of_another_shape_is_refused(key: str, typed: Any, words: str) -> None:
    setting = setting_of(GENERIC, key)
    assert setting is not None
    with pytest.raises(SettingError, match=words):
        setting.value_of(typed, GENERIC)


def test_set_setting_is_checked_before_it_is_queued_and_names_the_field() -> None:
    checked = validate("set-setting", {"setting": "push_times", "value": "5:00"}, GENERIC, NOW)
    assert checked["text"] == "05:00"
    assert checked["value"]["type"] == "array"
    with pytest.raises(CommandError) as caught:
        validate("set-setting", {"setting": "push_times", "value": "5"}, GENERIC, NOW)
    assert caught.value.field == "value"
    with pytest.raises(CommandError) as caught:
        validate("set-setting", {"setting": "colour", "value": "5"}, GENERIC, NOW)
    assert caught.value.field == "setting" and "push_times" in str(caught.value)
    with pytest.raises(CommandError, match="sync-clock") as caught:
        validate("set-setting", {"setting": "clock", "value": "2026-01-01 00:00"}, GENERIC, NOW)
    with pytest.raises(CommandError, match="is required"):
        validate("set-setting", {"setting": "pdr"}, GENERIC, NOW)


def test_a_secret_is_never_shown_nor_read() -> None:
    checked = validate("set-setting", {"setting": "valve_pin", "value": 1234}, GENERIC, NOW)
    assert checked["text"] == "(hidden)"
    with pytest.raises(CommandError, match="secret"):
        validate("read-setting", {"setting": "valve_pin"}, GENERIC, NOW)


def test_vendor_profiles_add_and_hide_settings() -> None:
    assert setting_of(HONEYWELL, "session_timeouts") is not None
    assert setting_of(GENERIC, "session_timeouts") is None
    _value, text = setting_of(HONEYWELL, "session_timeouts").value_of("120, 30, 600", HONEYWELL)
    assert text == "120, 30, 600"
    fewer = without(UNI_TS_SETTINGS, "valve_pin")
    assert "valve_pin" not in {s.key for s in fewer}
    with pytest.raises(KeyError):
        without(UNI_TS_SETTINGS, "colour")


def test_a_profile_whose_settings_name_unknown_objects_is_refused() -> None:
    objects = {k: v for k, v in GENERIC.objects.items() if k != "valve_pin"}
    broken = MeterProfile(name="broken", description="x", objects=objects)
    with pytest.raises(Exception, match="setting 'valve_pin': 'valve_pin' is not in its objects"):
        broken.validate()
    twice = MeterProfile(name="twice", description="x", settings=UNI_TS_SETTINGS * 2)
    with pytest.raises(Exception, match="setting 'pdr' twice"):
        twice.validate()
