"""Unit tests for what the vectors and the round trips do not pin down: edge cases, limits,
refusals, and the compact layouts of docs/uni-ts-11291.md §2.4 at their documented offsets."""

from __future__ import annotations

import datetime as dt
import pickle
import struct
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sac.dlms import Obis
from sac.dlms.apdu import decode_apdu
from sac.dlms.axdr import (
    Array,
    BitString,
    CompactArray,
    DataTag,
    DoubleLongUnsigned,
    Limits,
    LongUnsigned,
    OctetString,
    Structure,
    TypeDescription,
    VisibleString,
    decode_ber_length,
    decode_data,
    decode_type_description,
    encode_ber_length,
    encode_data,
)
from sac.dlms.compact import (
    CompactLayout,
    compact_buffer_of,
    decode_compact,
    fld,
    layout_from_description,
)
from sac.dlms.cosemtime import CosemDate, CosemDateTime, CosemTime
from sac.dlms.security import (
    CipheredApdu,
    SecurityContext,
    SecurityControl,
    Suite0Cipher,
)
from sac.dlms.wrapper import decode_wrapper, encode_wrapper
from sac.dlms.xdlms import DataNotification
from sac.errors import (
    DecodeError,
    DecryptionError,
    EncodeError,
    FramingError,
    ReplayError,
    SacError,
    SecurityError,
)
from sac.profiles.layouts import CF30, CF47, CF48, CF49, CF51, STANDARD_LAYOUTS

KEY = bytes(range(16))
TITLE = b"METER001"

# --- OBIS ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["7.0.13.2.0.255", "7-0:13.2.0*255", "7-0:13.2.0", " 7.0.13.2.0.255 "],
)
def test_obis_forms(text: str) -> None:
    o = Obis(text)
    assert str(o) == "7.0.13.2.0.255" and o.display() == "7-0:13.2.0*255"
    assert bytes(o) == bytes([7, 0, 13, 2, 0, 255]) and o.groups == (7, 0, 13, 2, 0, 255)
    assert (o.a, o.c, o.f) == (7, 13, 255)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "1.2.3",
        "1.2.3.4.5",
        "1.2.3.4.5.6.7",
        "256.0.0.0.0.0",
        "a.b.c.d.e.f",
        "1.2.3.4.5.-6",
        "7-0:13.2",
        "1.2.3.4.5.6\n7",
        "\u0667.0.13.2.0.255",
        b"\x00" * 5,
        b"\x00" * 7,
    ],
)
def test_obis_rejects_malformed(bad: str | bytes) -> None:
    with pytest.raises(DecodeError):
        Obis(bad)


def test_obis_is_a_value() -> None:
    a, b = Obis("0.0.1.0.0.255"), Obis(bytes([0, 0, 1, 0, 0, 255]))
    assert a == b and hash(a) == hash(b) and {a: 1}[b] == 1
    assert Obis("0.0.1.0.0.255") < Obis("0.0.2.0.0.255")
    assert pickle.loads(pickle.dumps(a)) == a
    with pytest.raises(AttributeError):
        a._b = b"x"  # type: ignore[misc]
    with pytest.raises(DecodeError):
        Obis.from_groups(0, 0, 1, 0, 0, 256)
    with pytest.raises(TypeError):
        Obis(42)  # type: ignore[arg-type]


# --- A-XDR --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "raw"),
    [
        (0, "00"),
        (0x7F, "7f"),
        (0x80, "8180"),
        (0xFF, "81ff"),
        (0x100, "820100"),
        (0x10000, "83010000"),
        (0x1000000, "8401000000"),
        (0xFFFFFFFF, "84ffffffff"),
    ],
)
def test_ber_lengths_up_to_four_bytes(n: int, raw: str) -> None:
    assert encode_ber_length(n).hex() == raw
    assert decode_ber_length(bytes.fromhex(raw), 0) == (n, len(raw) // 2)


@pytest.mark.parametrize("raw", ["80", "85" + "00" * 5, "8201", ""])
def test_ber_length_refusals(raw: str) -> None:
    with pytest.raises(DecodeError):
        decode_ber_length(bytes.fromhex(raw), 0)
    with pytest.raises(EncodeError):
        encode_ber_length(1 << 32)


def test_encoder_refuses_ambiguous_and_out_of_range_values() -> None:
    with pytest.raises(EncodeError, match="no DLMS width"):
        encode_data(5)
    with pytest.raises(EncodeError, match="no DLMS width"):
        encode_data(1.5)
    with pytest.raises(EncodeError):
        LongUnsigned(70000)
    with pytest.raises(EncodeError):
        BitString("012")
    with pytest.raises(EncodeError, match="Utf8String"):
        encode_data(VisibleString("€"))
    with pytest.raises(EncodeError):
        encode_data({"a": 1})


def test_plain_python_values_encode_naturally() -> None:
    assert encode_data(None) == b"\x00"
    assert encode_data(True) == b"\x03\x01"
    assert encode_data(b"ab") == b"\x09\x02ab"
    assert encode_data("ab") == b"\x0a\x02ab"
    assert encode_data([True]) == b"\x01\x01\x03\x01"
    assert encode_data((True,)) == b"\x02\x01\x03\x01"


def test_bit_string_and_dates() -> None:
    assert encode_data(BitString("1010000011")).hex() == "040aa0c0"
    assert decode_data(bytes.fromhex("040aa0c0")) == "1010000011"
    assert decode_data(bytes.fromhex("1a07e9010fff")) == CosemDate(2025, 1, 15, None)
    assert decode_data(bytes.fromhex("1b0a000000")) == CosemTime(10, 0, 0, 0)


def test_limits_on_depth_and_length() -> None:
    nested = b"\x02\x01" * 10 + b"\x00"
    assert decode_data(nested) is not None
    with pytest.raises(DecodeError, match="nested too deeply"):
        decode_data(nested, Limits(max_depth=5))
    with pytest.raises(DecodeError, match="over the limit"):
        decode_data(b"\x09\x82\x10\x00" + bytes(4096), Limits(max_length=1024))
    with pytest.raises(DecodeError, match="left after"):
        decode_data(b"\x00\x00")
    with pytest.raises(DecodeError, match="unknown data tag"):
        decode_data(b"\x07\x00\x00\x00\x00")  # tag 7 (floating-point) is not used by COSEM


def test_compact_array_by_hand() -> None:
    # 13 | array-of-structure{long-unsigned, octet-string} | contents length | two elements
    raw = bytes.fromhex("130202120909000102616200020163")
    value = decode_data(raw)
    assert isinstance(value, CompactArray)
    assert value.element_type == TypeDescription(
        DataTag.STRUCTURE, 2, (TypeDescription(DataTag.LONG_UNSIGNED), TypeDescription(9))
    )
    assert value.values == (Structure((1, b"ab")), Structure((2, b"c")))
    assert encode_data(value) == raw
    with pytest.raises(DecodeError, match="truncated"):
        decode_data(bytes.fromhex("131203000100"))
    with pytest.raises(DecodeError, match="runs past its contents"):
        decode_data(bytes.fromhex("020213120300010000"))


def test_type_description_refusals() -> None:
    assert decode_type_description(bytes.fromhex("01000312")) == TypeDescription(
        DataTag.ARRAY, 3, (TypeDescription(DataTag.LONG_UNSIGNED),)
    )
    for raw in ("", "99", "0203", "0100", "020112"):
        with pytest.raises(DecodeError):
            decode_type_description(bytes.fromhex(raw) + (b"\x00" if raw == "020112" else b""))


# --- COSEM time ---------------------------------------------------------------------------


def test_not_specified_fields() -> None:
    raw = bytes.fromhex("ffffffffffffffffff8000ff")
    value = CosemDateTime.from_bytes(raw)
    assert all(getattr(value, f) is None for f in value.__slots__)
    assert value.to_bytes() == raw
    with pytest.raises(DecodeError, match="not a point in time"):
        value.to_datetime()


def test_italian_inverted_deviation() -> None:
    cet = dt.timezone(dt.timedelta(hours=1))
    moment = dt.datetime(2025, 1, 15, 10, 0, tzinfo=cet)
    standard = CosemDateTime.from_datetime(moment)
    italian = CosemDateTime.from_datetime(moment, inverted_deviation=True)
    assert standard.deviation == -60 and italian.deviation == 60
    assert standard.weekday == italian.weekday == 3  # Wednesday
    assert italian.to_datetime(inverted_deviation=True) == moment
    assert italian.to_datetime().utcoffset() == dt.timedelta(hours=-1)  # read the DLMS way
    naive = CosemDateTime.from_datetime(dt.datetime(2025, 1, 15, 10, 0))
    assert naive.deviation is None and naive.to_datetime().tzinfo is None
    with pytest.raises(EncodeError):
        CosemDateTime(2025, 1, 1, 1, 0, 0, 0, 0, 2000, 0).to_bytes()


def test_summer_time_sets_the_daylight_saving_status_bit() -> None:
    """Clock status bit 7 (daylight_saving_active) follows the zone's summer time, as gurux
    writes it (tests/interop/test_settings_gurux.py); fixed offsets and naive times have none."""
    rome = ZoneInfo("Europe/Rome")
    summer = dt.datetime(2025, 7, 15, 10, 0, tzinfo=rome)
    winter = dt.datetime(2025, 1, 15, 10, 0, tzinfo=rome)
    assert CosemDateTime.from_datetime(summer, inverted_deviation=True).to_bytes()[-3:] == (
        b"\x00\x78\x80"
    )
    assert CosemDateTime.from_datetime(winter, inverted_deviation=True).status == 0
    assert CosemDateTime.from_datetime(summer, status=0x01).status == 0x81
    assert CosemDateTime.from_datetime(summer, status=None).status is None  # not specified
    cest = dt.datetime(2025, 7, 15, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert CosemDateTime.from_datetime(cest).status == 0  # a fixed offset says nothing of DST
    fold = dt.datetime(2025, 10, 26, 2, 30, tzinfo=rome)  # the first 02:30 (CEST), then CET
    assert CosemDateTime.from_datetime(fold).status == 0x80
    assert CosemDateTime.from_datetime(fold.replace(fold=1)).status == 0


# --- wrapper ------------------------------------------------------------------------------


def test_datagram_wrapper() -> None:
    assert decode_wrapper(encode_wrapper(1, 16, b"\xc4")).apdu == b"\xc4"
    for bad in (b"\x00\x01", encode_wrapper(1, 1, b"ab")[:-1], encode_wrapper(1, 1, b"a") + b"x"):
        with pytest.raises(FramingError):
            decode_wrapper(bad)
    with pytest.raises(FramingError):
        decode_wrapper(encode_wrapper(1, 1, bytes(100)), max_apdu_length=50)
    with pytest.raises(EncodeError):
        encode_wrapper(1, 70000, b"")


# --- security -----------------------------------------------------------------------------


def pair(**kw: object) -> tuple[SecurityContext, SecurityContext]:
    meter = SecurityContext(Suite0Cipher(KEY), TITLE, invocation_counter=10, **kw)  # type: ignore[arg-type]
    sac = SecurityContext(Suite0Cipher(KEY), b"SACSACSA", peer_system_title=TITLE)
    return meter, sac


def test_security_control_byte() -> None:
    assert SecurityControl.from_byte(0x30) == SecurityControl()
    assert SecurityControl.from_byte(0xD1) == SecurityControl(1, True, False, True, True)
    assert SecurityControl(1, True, False, True, True).to_byte() == 0xD1


def test_replayed_and_older_counters_are_refused() -> None:
    meter, sac = pair()
    first, second = meter.protect(b"\xc4\x01"), meter.protect(b"\xc4\x02")
    assert sac.unprotect(second) == b"\xc4\x02"
    for stale in (second, first):
        with pytest.raises(ReplayError) as info:
            sac.unprotect(stale)
        assert info.value.last == 11
    assert sac.peer_invocation_counter == 11


def test_bad_tag_moves_no_counter_and_names_no_secret() -> None:
    meter, sac = pair()
    wire = bytearray(meter.protect(b"\xc4\x01\xc1\x00\x06\x00\x00\x00\x01"))
    wire[-1] ^= 0x80
    with pytest.raises(DecryptionError) as info:
        sac.unprotect(bytes(wire))
    assert sac.peer_invocation_counter is None
    assert KEY.hex() not in str(info.value) and "c401" not in str(info.value)
    assert "hidden" in repr(sac.cipher) and KEY.hex() not in repr(sac)
    with pytest.raises(TypeError):
        pickle.dumps(sac.cipher)


def test_system_title_checks() -> None:
    meter, sac = pair(omit_system_title=True)
    wire = meter.protect(b"\x0f")
    assert CipheredApdu.from_bytes(wire).system_title == b""
    assert sac.unprotect(wire) == b"\x0f"  # the title is known in advance
    stranger = SecurityContext(Suite0Cipher(KEY), b"SACSACSA", peer_system_title=b"OTHER001")
    other, _ = pair()
    with pytest.raises(SecurityError, match="not the peer's"):
        stranger.unprotect(other.protect(b"\x0f"))
    with pytest.raises(SecurityError, match="none known"):
        SecurityContext(Suite0Cipher(KEY), b"SACSACSA").unprotect(wire)


def test_policies_and_forms() -> None:
    meter, sac = pair(security_control=0x10)  # authenticated only: plaintext on the wire
    wire = meter.protect(b"\xc0\x01secret")
    with pytest.raises(SecurityError, match="0x30 is required"):  # the policy is the context's
        sac.unprotect(wire)
    sac.security_control = 0x10
    assert b"secret" in wire and sac.unprotect(wire) == b"\xc0\x01secret"
    meter, sac = pair(security_control=0x20)  # encrypted only: refused, nothing authenticates
    with pytest.raises(SecurityError, match="0x30 is required"):
        sac.unprotect(meter.protect(b"\xc0\x01"))
    meter, sac = pair()
    glo = meter.protect(b"\xc0\x01\xc1", general=False)
    assert glo[0] == 0xC8 and sac.unprotect(glo) == b"\xc0\x01\xc1"
    with pytest.raises(EncodeError):
        meter.protect(b"\x0f\x00", general=False)  # a notification has no glo- form
    meter.invocation_counter = 1 << 32
    with pytest.raises(SecurityError, match="exhausted"):
        meter.protect(b"\xc0")
    for sc in (0x31, 0xB0, 0x70):
        with pytest.raises(SecurityError):
            Suite0Cipher(KEY).seal(sc, TITLE, 1, b"x")
    with pytest.raises(SecurityError):
        Suite0Cipher(KEY[:15])


# --- compact frames at the offsets of docs/uni-ts-11291.md §2.4 --------------------------------

HEAD = struct.pack(">BIH?BHHHII", 0, 1_700_000_000, 0x0102, True, 2, 7, 300, 0x1480, 123456, 789)


def with_id(template: int, rest: bytes) -> bytes:
    return bytes((template,)) + rest[1:]


def test_cf47_offsets() -> None:
    buf = with_id(47, HEAD) + struct.pack(">BI", 9, 4242) + b"\x02\xaa\xbb"
    assert len(buf) == 28 + 3
    f = decode_compact(buf, STANDARD_LAYOUTS)
    assert f.values == {
        "unix_time": 1_700_000_000,
        "pp4_network_status": 0x0102,
        "valve_output_state": True,
        "valve_control_state": 2,
        "metrological_event_counter": 7,
        "event_counter": 300,
        "daily_diagnostic": 0x1480,
        "converted_volume_index": 123456,
        "converted_volume_index_under_alarm": 789,
        "billing_period_counter": 9,
        "management_frame_counter": 4242,
        "spare": b"\xaa\xbb",
    }
    bound = {(str(fd.obis), fd.attribute): v for fd, v in f.readings()}
    assert bound[("0.0.96.3.10.255", 3)] == 2 and bound[("7.0.13.2.0.255", 2)] == 123456


def daily(n: int) -> bytes:
    return bytes((n,)) + b"".join(
        struct.pack(">IHII", 1_700_000_000 - d * 86400, d, 100 - d, 0) for d in range(n)
    )


def test_cf48_and_cf49_offsets() -> None:
    cf48 = with_id(48, HEAD) + daily(3) + struct.pack(">BI", 1, 99) + b"\x00"
    assert len(cf48) == 71 + 1 and cf48[66] == 1  # billing counter at 66, spare at 71
    f = decode_compact(cf48, STANDARD_LAYOUTS)
    assert [e["converted_volume_index"] for e in f["daily_load_profile"]] == [100, 99, 98]
    assert f["management_frame_counter"] == 99
    snapshot = bytes(range(50))
    cf49 = with_id(49, HEAD) + daily(3) + b"\x01" + snapshot + struct.pack(">I", 77) + b"\x00"
    assert len(cf49) == 121 + 1  # snapshot 67..116, FC at 117, spare at 121
    g = decode_compact(cf49, STANDARD_LAYOUTS)
    assert g["snapshot_period_data"] == snapshot and g["management_frame_counter"] == 77


def test_cf51_offsets() -> None:
    buf = b"\x33" + b"\x10" + b"FIO0000012345678" + struct.pack(">IIII", 1, 2, 3, 4)
    assert len(buf) == 34 and buf[18:22] == b"\x00\x00\x00\x01"
    f = decode_compact(buf, STANDARD_LAYOUTS)
    assert f["logical_device_name"] == "FIO0000012345678"
    assert (
        f["management_frame_counter"],
        f["management_frame_counter_offline"],
        f["guarantor_frame_counter"],
        f["installer_frame_counter"],
    ) == (1, 2, 3, 4)


def test_notification_body_variants_a_and_b() -> None:
    buffer = with_id(47, HEAD) + struct.pack(">BI", 9, 4242) + b"\x00"
    variant_a = DataNotification(1, None, OctetString(buffer)).to_bytes()
    variant_b = DataNotification(1, None, Structure((OctetString(buffer),))).to_bytes()
    assert variant_a[6:8] == b"\x09\x1d" and variant_b[6:10] == b"\x02\x01\x09\x1d"
    for raw in (variant_a, variant_b):
        body = decode_apdu(raw).body
        assert decode_compact(compact_buffer_of(body), STANDARD_LAYOUTS)["event_counter"] == 300
    for body in (True, Structure(()), Structure((LongUnsigned(1),)), Array([OctetString(b"")])):
        with pytest.raises(DecodeError, match="no compact buffer"):
            compact_buffer_of(body)


def test_compact_refusals() -> None:
    good = with_id(47, HEAD) + struct.pack(">BI", 9, 4242) + b"\x00"
    for bad, reason in (
        (good[:-1], "truncated"),
        (good + b"\x00", "left after"),
        (b"\x63" + good[1:], "no layout"),
        (b"", "empty"),
        (with_id(48, HEAD) + b"\x09" + bytes(20), "announces 9 records"),
    ):
        with pytest.raises(DecodeError, match=reason):
            decode_compact(bad, STANDARD_LAYOUTS)
    with pytest.raises(DecodeError, match="not template 47"):
        CF47.decode(b"\x30" + good[1:])
    with pytest.raises(ValueError, match="declared twice"):
        CompactLayout(1, "x", (fld("a", "u8"), fld("a", "u8")))
    with pytest.raises(ValueError, match="unknown kind"):
        fld("a", "u24")


def test_layout_from_template_description() -> None:
    # template_description of {double-long-unsigned, boolean, octet-string, date-time}
    desc = decode_type_description(bytes.fromhex("020406030919"))
    objects = (
        (1, Obis("0.0.1.1.0.255"), 2),
        (70, Obis("0.0.96.3.10.255"), 2),
        (1, Obis("0.0.96.1.10.255"), 2),
        (8, Obis("0.0.1.0.0.255"), 2),
    )
    layout = layout_from_description(128, desc, objects)
    when = CosemDateTime(2025, 1, 15, 3, 10, 0, 0, 0, 60, 0)
    buf = (
        b"\x80" + struct.pack(">I?", 1_700_000_000, True) + b"\x0e01234567890123" + when.to_bytes()
    )
    frame = layout.decode(buf)
    assert frame.values == {
        "1/0.0.1.1.0.255/2": 1_700_000_000,
        "70/0.0.96.3.10.255/2": True,
        "1/0.0.96.1.10.255/2": b"01234567890123",
        "8/0.0.1.0.0.255/2": when,
    }
    assert layout.encode(frame.values) == buf
    with pytest.raises(DecodeError):
        layout_from_description(1, decode_type_description(b"\x12"))
    with pytest.raises(DecodeError, match="capture objects"):
        layout_from_description(1, desc, objects[:2])


def _values_for(layout: CompactLayout) -> st.SearchStrategy[dict]:
    ranges = {
        "bool": st.booleans(),
        "u8": st.integers(0, 255),
        "enum": st.integers(0, 255),
        "i8": st.integers(-128, 127),
        "u16": st.integers(0, 0xFFFF),
        "i16": st.integers(-0x8000, 0x7FFF),
        "u32": st.integers(0, 0xFFFFFFFF),
        "octet-string": st.binary(max_size=20),
        "visible-string": st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=16),
    }

    def one(f: object) -> st.SearchStrategy[object]:
        if f.kind == "entries":
            record = st.fixed_dictionaries({e.name: ranges[e.kind] for e in f.entries})
            return st.lists(record, max_size=5)
        if f.kind == "bytes":
            return st.binary(min_size=f.size, max_size=f.size)
        return ranges[f.kind]

    return st.fixed_dictionaries({f.name: one(f) for f in layout.fields})


@pytest.mark.parametrize("layout", [CF30, CF47, CF48, CF49, CF51], ids=lambda x: x.name)
def test_construct_builder_and_struct_decoder_agree(layout: CompactLayout) -> None:
    @given(_values_for(layout))
    def run(values: dict) -> None:
        buf = layout.encode(values)
        assert buf[0] == layout.template_id
        assert layout.decode(buf).values == values

    run()


def test_encode_refuses_missing_or_bad_values() -> None:
    with pytest.raises(EncodeError):
        CF47.encode({"unix_time": 1})
    values = CF47.decode(with_id(47, HEAD) + struct.pack(">BI", 9, 4242) + b"\x00").values
    with pytest.raises(EncodeError):
        CF47.encode(values | {"billing_period_counter": 256})


def test_every_error_is_a_sac_error() -> None:
    for cls in (
        DecodeError,
        EncodeError,
        FramingError,
        DecryptionError,
        ReplayError,
        SecurityError,
    ):
        assert issubclass(cls, SacError)


def test_array_of_arrays_round_trip() -> None:
    value = Array([Array([DoubleLongUnsigned(1)]), Array([OctetString(b"x")])])
    assert decode_data(encode_data(value)) == value
