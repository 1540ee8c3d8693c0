"""Every public test vector of tests/vectors/vectors.json, byte for byte.

Each vector id is claimed by exactly one check below; ``test_every_vector_is_checked`` fails
when a vector is added to the file and no check claims it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest

from sac.dlms import Obis
from sac.dlms.acse import (
    AARE,
    AARQ,
    RLRE,
    RLRQ,
    ApplicationContext,
    AssociationResult,
    InitiateRequest,
    InitiateResponse,
    Mechanism,
    decode_acse,
    decode_initiate,
)
from sac.dlms.apdu import decode_apdu
from sac.dlms.axdr import (
    Array,
    DoubleLongUnsigned,
    Integer,
    LongUnsigned,
    OctetString,
    Structure,
    decode_data,
)
from sac.dlms.compact import decode_compact
from sac.dlms.cosem import ActionResult, DataAccessResult, ServiceError, StateError
from sac.dlms.cosemtime import CosemDateTime
from sac.dlms.security import (
    CipheredApdu,
    SecurityContext,
    SecurityControl,
    Suite0Cipher,
)
from sac.dlms.wrapper import WrapperFramer, encode_wrapper
from sac.dlms.xdlms import (
    NO_VALUE,
    ActionRequestNormal,
    ActionResponseNormal,
    AttributeDescriptor,
    ConfirmedServiceError,
    DataNotification,
    ExceptionResponse,
    GetRequestNext,
    GetRequestNormal,
    GetRequestWithList,
    GetResponseNormal,
    GetResponseWithDatablock,
    GetResponseWithList,
    MethodDescriptor,
    SetRequestNormal,
    SetResponseNormal,
)
from sac.errors import DecodeError, DecryptionError, FramingError
from sac.profiles.layouts import STANDARD_LAYOUTS
from tests.conftest import all_vectors, vbytes, vector

CHECKS: dict[str, Callable[[str], None]] = {}


def check(*ids: str) -> Callable[[Callable[[str], None]], Callable[[str], None]]:
    def register(fn: Callable[[str], None]) -> Callable[[str], None]:
        for vid in ids:
            assert vid not in CHECKS, vid
            CHECKS[vid] = fn
        return fn

    return register


def unwrap(vid: str) -> bytes:
    """The APDU of a wrapper+apdu vector, after checking its header against `expected`."""
    v = vector(vid)
    raw = vbytes(vid)
    [pdu] = WrapperFramer().feed(raw)
    w = v["expected"]["wrapper"]
    assert (1, pdu.source, pdu.destination, len(pdu.apdu)) == (
        w["version"],
        w["source_wport"],
        w["destination_wport"],
        w["length"],
    )
    assert encode_wrapper(pdu.source, pdu.destination, pdu.apdu) == raw
    return pdu.apdu


def key_of(v: dict) -> tuple[bytes, bytes]:
    ek = bytes.fromhex(v.get("key_hex") or v["ek_hex"])
    ak = bytes.fromhex(v.get("key_hex") or v["ak_hex"])
    return ek, ak


def utc(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- Italian gas meters -------------------------------------------------------------------

TV1 = [vid for vid in all_vectors() if vid.startswith("TV1-")]


@check(*TV1)
def check_tv1(vid: str) -> None:
    v, e = vector(vid), vector(vid)["expected"]
    apdu = unwrap(vid)
    env = decode_apdu(apdu)
    assert isinstance(env, CipheredApdu)
    assert env.tag == int(e["apdu_tag_hex"], 16)
    assert env.system_title.hex() == e["system_title_hex"]
    assert env.invocation_counter == e["invocation_counter"] == v["invocation_counter"]
    sc = SecurityControl.from_byte(env.security_control)
    assert sc == SecurityControl(**e["security_control"])
    assert len(env.payload) - 12 == e["ciphertext_length"]
    assert env.payload[-12:].hex() == e["tag_hex"]
    ek, ak = key_of(v)
    sac_side = SecurityContext(Suite0Cipher(ek, ak), b"SACSACSA")
    plain = sac_side.unprotect(env)
    assert plain.hex() == v["plaintext_hex"]
    assert sac_side.peer_system_title == bytes.fromhex(v["system_title_hex"])
    dn = decode_apdu(plain)
    d = e["data_notification"]
    assert isinstance(dn, DataNotification)
    assert dn.long_invoke_id_and_priority == d["long_invoke_id_and_priority"]
    assert dn.date_time is None and d["date_time"] is None
    assert isinstance(dn.body, OctetString) and d["body_type"] == "octet-string"
    assert len(dn.body) == d["body_length"]
    assert dn.body.hex() == d["compact_buffer_hex"]
    assert dn.body[0] == d["compact_buffer_byte0"]
    unix = int.from_bytes(dn.body[1:5], "big")
    assert unix == d["compact_buffer_u32_at_offset_1"]
    assert utc(unix) == d["compact_buffer_u32_at_offset_1_as_utc"]
    # our encoder gives the meter's bytes back: plaintext, then the ciphered frame
    assert dn.to_bytes() == plain
    meter_side = SecurityContext(
        Suite0Cipher(ek, ak), env.system_title, invocation_counter=env.invocation_counter
    )
    assert encode_wrapper(1, 1, meter_side.protect(dn.to_bytes())) == vbytes(vid)


@check("DN-PLAIN-FIORENTINI")
def check_dn_fiorentini(vid: str) -> None:
    e = vector(vid)["expected"]
    dn = decode_apdu(vbytes(vid))
    assert dn.long_invoke_id_and_priority == e["long_invoke_id_and_priority"]
    assert dn.date_time is None
    assert b"\x09" + bytes((len(dn.body),)) + dn.body == bytes.fromhex(e["body_hex"])
    assert e["round_trip_encode_equal"] and dn.to_bytes() == vbytes(vid)


@check("GGC-EMPTY-SYSTEM-TITLE")
def check_ggc_empty_title(vid: str) -> None:
    e = vector(vid)["expected"]
    env = CipheredApdu.from_bytes(vbytes(vid))
    assert env.system_title == b"" and e["system_title_length"] == 0
    assert env.security_control == int(e["security_control_hex"], 16)
    assert env.invocation_counter == e["invocation_counter"]
    assert env.payload.hex() == e["ciphered_text_and_tag_hex"]
    assert len(env.payload) + 5 == e["ciphered_content_length"]
    assert env.to_bytes() == vbytes(vid)
    # the key is not public: an empty title cannot be opened without knowing the sender
    ctx = SecurityContext(Suite0Cipher(bytes(16)), b"SACSACSA")
    with pytest.raises(Exception, match="no system title"):
        ctx.unprotect(env)


@check("TV2-CF30")
def check_cf30(vid: str) -> None:
    e = vector(vid)["expected"]
    buf = vbytes(vid)
    assert len(buf) == e["length"]
    frame = decode_compact(buf, STANDARD_LAYOUTS)
    assert frame.template_id == e["template_id"]
    same = [
        "unix_time",
        "valve_output_state",
        "valve_control_state",
        "metrological_event_counter",
        "event_counter",
        "current_diagnostic",
        "batteries_in_use",
        "batteries_present",
        "primary_battery_residual_pct",
        "secondary_battery_residual_pct",
        "volume_scaler",
        "volume_unit",
        "temperature_scaler",
        "temperature_unit",
    ]
    for name in same:
        assert frame[name] == e[name], name
    assert utc(frame["unix_time"]) == e["unix_time_utc"]
    assert f"{frame['current_diagnostic']:04x}" == e["current_diagnostic_hex"]
    assert frame["management_frame_counter"] == e["management_frame_counter_online"]
    t = e["gprs_timeouts_s"]
    assert (
        frame["session_max_duration"],
        frame["inactivity_timeout"],
        frame["network_attach_timeout"],
    ) == (t["session_max_duration"], t["inactivity"], t["network_attach"])
    for ours, theirs, count in (
        (frame["daily_readings"], e["daily_readings"], e["daily_readings_count"]),
        (frame["interval_data"], e["interval_data"], e["interval_data_count"]),
    ):
        assert len(ours) == len(theirs) == count
        for a, b in zip(ours, theirs, strict=True):
            assert a["unix_time"] == b["unix_time"] and utc(a["unix_time"]) == b["utc"]
            assert a["daily_diagnostic"] == b["diagnostic"]
            assert a["converted_volume_index"] == b["converted_volume_index"]
            assert (
                a["converted_volume_index_under_alarm"] == b["converted_volume_index_under_alarm"]
            )
    assert frame.trailing == b""


@check("TV3-AARQ-PUBLIC")
def check_tv3_aarq(vid: str) -> None:
    e = vector(vid)["expected"]
    aarq = decode_apdu(unwrap(vid))
    assert isinstance(aarq, AARQ)
    assert aarq.application_context == ApplicationContext.LOGICAL_NAME
    assert aarq.mechanism is None and aarq.calling_ap_title is None
    ui = aarq.user_information
    assert ui.to_bytes().hex() == e["initiate_request_hex"]
    assert ui.proposed_dlms_version == e["dlms_version"]
    assert f"{ui.proposed_conformance:06x}" == e["proposed_conformance_hex"]
    assert ui.client_max_receive_pdu_size == e["client_max_receive_pdu_size"]
    built = AARQ(InitiateRequest(0x401E5D, 0xFFFF))
    assert encode_wrapper(16, 1, built.to_bytes()) == vbytes(vid)


@check("TV3-GET-LDN", "TV3-GET-FC", "GET-REQ-NORMAL")
def check_get_normal(vid: str) -> None:
    v = vector(vid)
    e = v["expected"].get("apdu", v["expected"])
    apdu = unwrap(vid) if v["layer"] == "wrapper+apdu" else vbytes(vid)
    req = decode_apdu(apdu)
    assert isinstance(req, GetRequestNormal) and e["service"] == "get-request-normal"
    assert req.invoke_id_and_priority == int(e["invoke_id_and_priority_hex"], 16)
    attr = e.get("attribute", e.get("attribute_or_method"))
    assert req.attribute == AttributeDescriptor(e["class_id"], Obis(e["logical_name"]), attr)
    assert (req.access is not None) == e["access_selection"]
    built = GetRequestNormal(0xC1, AttributeDescriptor(e["class_id"], Obis(e["logical_name"]), 2))
    assert built.to_bytes() == apdu


@check("TV3-RLRQ", "TV3-RLRE")
def check_release(vid: str) -> None:
    e = vector(vid)["expected"]
    apdu = decode_apdu(vbytes(vid))
    assert apdu.to_bytes() == vbytes(vid)
    assert apdu.reason == e["reason"] and f"{vbytes(vid)[0]:02x}" == e["tag_hex"]
    assert type(apdu) is (RLRQ if vid.endswith("RLRQ") else RLRE)
    assert apdu == (RLRQ() if vid.endswith("RLRQ") else RLRE())


@check("TV4-GET-PDR-GGC", "TV4-ACTION-RECONNECT-GGC")
def check_tv4(vid: str) -> None:
    v, e = vector(vid), vector(vid)["expected"]
    apdu = unwrap(vid)
    env = CipheredApdu.from_bytes(apdu)
    assert env.system_title == b"" and e["system_title_length"] == 0
    assert not v["system_title_on_wire"]
    assert env.invocation_counter == e["invocation_counter"]
    assert env.payload[-12:].hex() == e["tag_hex"]
    assert len(env.payload) - 12 == e["ciphertext_length"]
    ek, ak = key_of(v)
    title = bytes.fromhex(v["system_title_hex"])
    assert title == v["system_title_ascii"].encode()
    meter = SecurityContext(Suite0Cipher(ek, ak), b"\x00" * 8, peer_system_title=title)
    plain = meter.unprotect(env)
    assert plain.hex() == v["plaintext_hex"]
    p = e["plaintext_apdu"]
    req = decode_apdu(plain)
    ln = Obis(p["logical_name"])
    if p["service"] == "get-request-normal":
        expected = GetRequestNormal(0xC1, AttributeDescriptor(p["class_id"], ln, p["attribute"]))
    else:
        assert p["parameters"] == {"type": "integer", "value": 0}
        expected = ActionRequestNormal(
            0xC1, MethodDescriptor(p["class_id"], ln, p["method"]), Integer(0)
        )
    assert req == expected
    sac = SecurityContext(
        Suite0Cipher(ek, ak),
        title,
        invocation_counter=v["invocation_counter"],
        omit_system_title=True,
    )
    assert encode_wrapper(1, 1, sac.protect(expected.to_bytes())) == vbytes(vid)
    assert sac.invocation_counter == v["invocation_counter"] + 1


@check("TV5-SET-VALVE-SCRIPT", "TV5-SET-VALVE-TIME")
def check_tv5(vid: str) -> None:
    e = vector(vid)["expected"]
    req = decode_apdu(vbytes(vid))
    assert isinstance(req, SetRequestNormal) and req.access is None
    assert req.attribute == AttributeDescriptor(
        e["class_id"], Obis(e["logical_name"]), e["attribute"]
    )
    if vid.endswith("SCRIPT"):
        value = Structure((OctetString(bytes(Obis("0.0.10.0.106.255"))), LongUnsigned(1)))
    else:
        value = Array(
            [
                Structure(
                    (OctetString(bytes.fromhex("0a000000")), OctetString(b"\x07\xe9\x01\x0f\xff"))
                )
            ]
        )
    assert req.value == value
    assert SetRequestNormal(0xC1, req.attribute, value).to_bytes() == vbytes(vid)
    assert encode_wrapper(1, 1, req.to_bytes()) == vbytes(vid, "wrapped_hex")


# --- ACSE ---------------------------------------------------------------------------------


@check(
    "AARE-ACCEPTED",
    "AARE-REJECTED-ACN",
    "AARE-REJECTED-DLMS-VERSION",
    "AARE-HLS-GMAC",
    "AARE-ACCEPTED-CONF-1E1D",
    "AARE-REJECTED-AUTH-FAILURE",
)
def check_aare(vid: str) -> None:
    e = vector(vid)["expected"]
    aare = decode_acse(vbytes(vid))
    assert isinstance(aare, AARE) and aare.to_bytes() == vbytes(vid)
    assert aare.result == e["result"] and aare.diagnostic == e["diagnostic"]
    if "result_name" in e:
        assert AssociationResult(aare.result).name.lower().replace("_", "-") == e["result_name"]
    if "result_source_diagnostic" in e:
        assert e["result_source_diagnostic"] == "acse-service-user" and aare.diagnostic_source == 1
    if "mechanism_name_hex" in e:
        assert aare.mechanism == Mechanism.HLS_GMAC
        assert (
            aare.responding_authentication_value.hex() == e["responding_authentication_value_hex"]
        )
        assert (
            aare.responding_authentication_value.decode()
            == e["responding_authentication_value_ascii"]
        )
    if "initiate_response" in e:
        check_initiate_response(aare.user_information, e["initiate_response"])
    cse = e.get("confirmed_service_error") or (
        {"hex": e["confirmed_service_error_hex"]} if "confirmed_service_error_hex" in e else None
    )
    if cse:
        assert isinstance(aare.user_information, ConfirmedServiceError)
        assert aare.user_information.to_bytes().hex() == cse["hex"]
        if "value" in cse:
            assert aare.user_information.value == cse["value"]


def check_initiate_response(ir: InitiateResponse, e: dict) -> None:
    assert isinstance(ir, InitiateResponse)
    assert ir.negotiated_quality_of_service == e["negotiated_quality_of_service"]
    assert ir.negotiated_dlms_version == e["negotiated_dlms_version"]
    assert f"{ir.negotiated_conformance:06x}" == e["negotiated_conformance_hex"]
    assert ir.server_max_receive_pdu_size == e["server_max_receive_pdu_size"]
    assert f"{ir.vaa_name:04x}" == e["vaa_name_hex"]


@check("AARE-GLO-ACCEPTED", "AARE-GLO-CSE", "AARE-GLO-CSE-WRONG-KEY")
def check_aare_glo(vid: str) -> None:
    v, e = vector(vid), vector(vid)["expected"]
    aare = decode_acse(vbytes(vid))
    assert aare.to_bytes() == vbytes(vid)
    assert aare.application_context == ApplicationContext.LOGICAL_NAME_CIPHERING
    assert aare.result == e["result"] and aare.diagnostic == e["diagnostic"]
    assert aare.responding_ap_title.hex() == e["responding_ap_title_hex"]
    ui = aare.user_information
    assert isinstance(ui, CipheredApdu) and f"{ui.tag:02x}" == e["user_information_tag_hex"]
    assert ui.invocation_counter == e["invocation_counter"]
    ek, ak = key_of(v)
    client = SecurityContext(
        Suite0Cipher(ek, ak), b"CLIENT01", peer_system_title=aare.responding_ap_title
    )
    if "decryption" in e:
        with pytest.raises(DecryptionError):
            client.unprotect(ui)
        assert client.peer_invocation_counter is None  # a failed APDU moves no counter
        return
    plain = client.unprotect(ui)
    assert plain.hex() == v["plaintext_hex"]
    inner = decode_initiate(plain)
    if "plaintext_initiate_response" in e:
        check_initiate_response(inner, e["plaintext_initiate_response"])
    else:
        assert inner.to_bytes().hex() == e["plaintext_confirmed_service_error"]["hex"]
        assert inner.value == e["plaintext_confirmed_service_error"]["value"]


@check("AARQ-NOSEC", "AARQ-LLS", "AARQ-HLS-GMAC")
def check_aarq(vid: str) -> None:
    e = vector(vid)["expected"]
    aarq = decode_acse(vbytes(vid))
    assert isinstance(aarq, AARQ) and aarq.to_bytes() == vbytes(vid)
    if e.get("authentication") is None:
        assert aarq.mechanism is None
        assert f"{aarq.user_information.proposed_conformance:06x}" == e["proposed_conformance_hex"]
        assert aarq.user_information.client_max_receive_pdu_size == e["client_max_receive_pdu_size"]
    else:
        mech = Mechanism.LLS if "LLS" in e["authentication"] else Mechanism.HLS_GMAC
        assert aarq.mechanism == mech
        assert aarq.calling_authentication_value.decode() == e["authentication_value_ascii"]
    if aarq.calling_authentication_value:  # a password or challenge never shows in repr
        assert aarq.calling_authentication_value.decode() not in repr(aarq)


@check("RLRE-WITH-INITIATE-RESPONSE")
def check_rlre_initiate(vid: str) -> None:
    e = vector(vid)["expected"]
    rlre = decode_acse(vbytes(vid))
    assert rlre.reason == e["reason"] and rlre.to_bytes() == vbytes(vid)
    check_initiate_response(rlre.user_information, e["initiate_response"])


@check("AARQ-GLO-LLS", "RLRQ-GLO-INITIATE-REQUEST")
def check_glo_initiate_request(vid: str) -> None:
    v, e = vector(vid), vector(vid)["expected"]
    apdu = decode_acse(vbytes(vid))
    assert apdu.to_bytes() == vbytes(vid)
    title = bytes.fromhex(v["system_title_hex"])
    if isinstance(apdu, AARQ):
        assert apdu.calling_ap_title.hex() == e["calling_ap_title_hex"]
        assert apdu.calling_authentication_value.decode() == e["authentication_value_ascii"]
        assert apdu.user_information.to_bytes().hex() == e["glo_initiate_request_hex"]
    else:
        assert apdu.reason == e["reason"]
    ek, ak = key_of(v)
    server = SecurityContext(Suite0Cipher(ek, ak), b"SERVER01", peer_system_title=title)
    plain = server.unprotect(apdu.user_information)
    assert plain.hex() == v["plaintext_hex"]
    ir = decode_initiate(plain)
    assert isinstance(ir, InitiateRequest)
    if "plaintext_initiate_request" in e:
        p = e["plaintext_initiate_request"]
        assert ir.dedicated_key.hex() == p["dedicated_key_hex"]
        assert ir.response_allowed is p["response_allowed"]
        assert ir.proposed_dlms_version == p["dlms_version"]
        assert f"{ir.proposed_conformance:06x}" == p["proposed_conformance_hex"]
        assert ir.client_max_receive_pdu_size == p["client_max_receive_pdu_size"]
        assert p["dedicated_key_hex"] not in repr(ir)
    client = SecurityContext(
        Suite0Cipher(ek, ak), title, invocation_counter=v["invocation_counter"]
    )
    assert client.protect(ir.to_bytes(), general=False) == apdu.user_information.to_bytes()


@check("RLRE-GLO-INITIATE-RESPONSE")
def check_rlre_glo(vid: str) -> None:
    v, e = vector(vid), vector(vid)["expected"]
    rlre = decode_acse(vbytes(vid))
    assert rlre.reason == e["reason"] and rlre.to_bytes() == vbytes(vid)
    ek, ak = key_of(v)
    ctx = SecurityContext(
        Suite0Cipher(ek, ak), b"CLIENT01", peer_system_title=bytes.fromhex(v["system_title_hex"])
    )
    plain = ctx.unprotect(rlre.user_information)
    assert plain.hex() == v["plaintext_hex"]
    check_initiate_response(decode_initiate(plain), e["plaintext_initiate_response"])


# --- xDLMS --------------------------------------------------------------------------------


@check("GET-REQ-NEXT")
def check_get_next(vid: str) -> None:
    e = vector(vid)["expected"]
    req = decode_apdu(vbytes(vid))
    assert req == GetRequestNext(int(e["invoke_id_and_priority_hex"], 16), e["block_number"])
    assert req.to_bytes() == vbytes(vid)


@check("GET-REQ-WITH-LIST")
def check_get_with_list(vid: str) -> None:
    e = vector(vid)["expected"]
    req = decode_apdu(vbytes(vid))
    assert isinstance(req, GetRequestWithList) and len(req.items) == e["count"]
    for (desc, access), item in zip(req.items, e["items"], strict=True):
        assert desc == AttributeDescriptor(
            item["class_id"], Obis(item["logical_name"]), item["attribute"]
        )
        assert access is None
    assert req.to_bytes() == vbytes(vid)


@check("GET-RESP-NORMAL", "GET-RESP-NORMAL-ERROR")
def check_get_response(vid: str) -> None:
    e = vector(vid)["expected"]
    resp = decode_apdu(vbytes(vid))
    assert isinstance(resp, GetResponseNormal)
    if e["result"] == "data":
        assert resp.result == DoubleLongUnsigned(e["data"]["value"])
        assert type(resp.result) is DoubleLongUnsigned
    else:
        assert resp.result == DataAccessResult(e["data_access_result"])
        assert resp.result.name.lower().replace("_", "-") == e["name"]
    assert resp.to_bytes() == vbytes(vid)


@check(
    "GET-RESP-BLOCK-FIRST",
    "GET-RESP-BLOCK-LAST",
    "GET-RESP-BLOCK-LAST-ERROR",
    "GET-RESP-BLOCK-LAST-GOSEM",
)
def check_get_block(vid: str) -> None:
    e = vector(vid)["expected"]
    resp = decode_apdu(vbytes(vid))
    assert isinstance(resp, GetResponseWithDatablock)
    assert resp.last_block is e["last_block"] and resp.block_number == e["block_number"]
    if "invoke_id_and_priority_hex" in e:
        assert resp.invoke_id_and_priority == int(e["invoke_id_and_priority_hex"], 16)
    if "data_access_result" in e:
        assert resp.error == e["data_access_result"] and resp.raw == b""
    else:
        if "raw_data_length" in e:
            assert len(resp.raw) == e["raw_data_length"]
            assert vbytes(vid)[9:12].hex() == e["raw_data_length_encoding_hex"]
        if "raw_data_prefix_hex" in e:
            assert resp.raw.hex().startswith(e["raw_data_prefix_hex"])
        if "raw_data_hex" in e:
            assert resp.raw.hex() == e["raw_data_hex"]
    assert resp.to_bytes() == vbytes(vid)


@check("GET-RESP-WITH-LIST")
def check_get_response_list(vid: str) -> None:
    e = vector(vid)["expected"]
    resp = decode_apdu(vbytes(vid))
    assert isinstance(resp, GetResponseWithList) and len(resp.results) == e["count"]
    ldn, clock = resp.results
    assert ldn.decode() == e["items"][0]["value_ascii"]
    assert clock.hex() == e["items"][1]["value_hex"]
    when = CosemDateTime.from_bytes(clock)
    d = e["items"][1]["date_time"]
    assert (when.year, when.month, when.day, when.weekday) == (
        d["year"],
        d["month"],
        d["day"],
        d["weekday"],
    )
    assert (when.hour, when.minute, when.second, when.hundredths) == (
        d["hour"],
        d["minute"],
        d["second"],
        d["hundredths"],
    )
    assert (when.deviation, when.status) == (d["deviation"], d["clock_status"])
    # DLMS deviation -60 is CET (UTC+1); an Italian meter would write +60 for it
    assert when.utc_offset() == dt.timedelta(hours=1)
    assert when.utc_offset(inverted_deviation=True) == dt.timedelta(hours=-1)
    assert resp.to_bytes() == vbytes(vid)


@check("GET-BLOCK-EXCHANGE")
def check_block_exchange(vid: str) -> None:
    e = vector(vid)["expected"]
    steps = vector(vid)["sequence"]
    assert b"".join(bytes.fromhex(s["hex"]) for s in steps) == vbytes(vid)
    raw = b""
    for step in steps:
        apdu = decode_apdu(bytes.fromhex(step["hex"]))
        assert apdu.to_bytes().hex() == step["hex"]
        if isinstance(apdu, GetResponseWithDatablock):
            raw += apdu.raw
    assert raw.hex() == e["reassembled_raw_data_hex"]
    assert decode_data(raw) == Array(DoubleLongUnsigned(i) for i in e["decoded"]["value"])


@check("SET-REQ-CLOCK")
def check_set_clock(vid: str) -> None:
    e = vector(vid)["expected"]
    req = decode_apdu(vbytes(vid))
    assert isinstance(req, SetRequestNormal)
    assert req.attribute == AttributeDescriptor(
        e["class_id"], Obis(e["logical_name"]), e["attribute"]
    )
    assert b"\x09\x0c" + req.value == bytes.fromhex(e["value_hex"])
    assert CosemDateTime.from_bytes(req.value).to_bytes() == req.value
    assert req.to_bytes() == vbytes(vid)


@check("SET-RESP-NORMAL")
def check_set_response(vid: str) -> None:
    resp = decode_apdu(vbytes(vid))
    assert resp == SetResponseNormal(0xC1, DataAccessResult(vector(vid)["expected"]["result"]))
    assert resp.to_bytes() == vbytes(vid)


@check("ACTION-REQ-HLS-REPLY", "ACTION-REQ-NO-PARAMS")
def check_action_request(vid: str) -> None:
    e = vector(vid)["expected"]
    req = decode_apdu(vbytes(vid))
    assert isinstance(req, ActionRequestNormal)
    assert req.method == MethodDescriptor(e["class_id"], Obis(e["logical_name"]), e["method"])
    if "parameters_hex" in e:
        assert b"\x09" + bytes((len(req.parameters),)) + req.parameters == bytes.fromhex(
            e["parameters_hex"]
        )
    else:
        assert req.parameters is NO_VALUE and e["parameters"] is None
    assert req.to_bytes() == vbytes(vid)


@check("ACTION-RESP-SUCCESS", "ACTION-RESP-WITH-DATA", "ACTION-RESP-WITH-ERROR")
def check_action_response(vid: str) -> None:
    e = vector(vid)["expected"]
    resp = decode_apdu(vbytes(vid))
    assert isinstance(resp, ActionResponseNormal) and resp.result == ActionResult(e["result"])
    ret = e["return_parameters"]
    if ret is None:
        assert resp.return_parameters is NO_VALUE
    elif "data_hex" in ret:
        assert b"\x09\x11" + resp.return_parameters == bytes.fromhex(ret["data_hex"])
    else:
        assert resp.return_parameters == DataAccessResult(ret["data_access_result"])
    assert resp.to_bytes() == vbytes(vid)


@check("EXC-SNA-ONP", "EXC-SNA-SNS", "EXC-SU-OR")
def check_exception(vid: str) -> None:
    e = vector(vid)["expected"]
    exc = decode_apdu(vbytes(vid))
    assert exc == ExceptionResponse(StateError(e["state_error"]), ServiceError(e["service_error"]))
    assert exc.state_error.name.lower().replace("_", "-") == e["state_error_name"]
    assert exc.service_error.name.lower().replace("_", "-") == e["service_error_name"]
    assert exc.to_bytes() == vbytes(vid)


@check("CSE-INITIATE-DLMS-VERSION", "CSE-AS-AARQ-REPLY")
def check_cse(vid: str) -> None:
    e = vector(vid)["expected"]
    cse = decode_apdu(vbytes(vid))
    assert cse == ConfirmedServiceError(
        e["confirmed_service_error"], e["service_error_choice"], e["value"]
    )
    assert cse.to_bytes() == vbytes(vid)


@check(
    "DN-PLAIN-DATETIME",
    "DN-PLAIN-DATETIME-DECODE",
    "DN-PLAIN-NO-DATETIME",
    "DN-PLAIN-NO-DATETIME-FF",
)
def check_dn_plain(vid: str) -> None:
    e = vector(vid)["expected"]
    dn = decode_apdu(vbytes(vid))
    assert isinstance(dn, DataNotification)
    assert dn.long_invoke_id_and_priority == e["long_invoke_id_and_priority"]
    assert dn.body is True and e["body"] == {"type": "boolean", "value": True}
    if e.get("date_time", "absent") is None:
        assert dn.date_time is None
    else:
        assert dn.date_time.to_datetime().strftime("%Y-%m-%dT%H:%M:%SZ") == e["date_time_utc"]
        if "date_time_hex" in e:
            assert dn.date_time.to_bytes().hex() == e["date_time_hex"]
            assert dn.date_time.deviation == e["date_time"]["deviation"]
    canonical = vbytes(vid)[-1] == 0x01  # boolean written as 01 (FF reads as true too)
    assert (dn.to_bytes() == vbytes(vid)) is canonical


@check("DN-PLAIN-PUSH-STRUCT")
def check_dn_push_struct(vid: str) -> None:
    e = vector(vid)["expected"]
    dn = decode_apdu(vbytes(vid))
    assert dn.long_invoke_id_and_priority == e["long_invoke_id_and_priority"]
    assert dn.date_time is None
    [entry] = dn.body
    assert [entry[0].hex(), *entry[1:]] == e["body_decoded"][0]
    assert str(Obis(entry[0])) == e["first_element_logical_name"]
    assert dn.to_bytes() == vbytes(vid)


NEGATIVE_APDUS = [
    vid for vid, v in all_vectors().items() if v.get("negative") and v["layer"] == "apdu"
]


@check(*NEGATIVE_APDUS)
def check_negative_apdu(vid: str) -> None:
    assert vector(vid)["expected"] == {"decode": "error"}
    with pytest.raises(DecodeError):
        decode_apdu(vbytes(vid))


# --- wrapper ------------------------------------------------------------------------------


@check("WRAPPER-TWO-PDUS-ONE-READ")
def check_two_pdus(vid: str) -> None:
    e = vector(vid)["expected"]["pdus"]
    raw = vbytes(vid)
    framer = WrapperFramer(sources={3}, destinations={1})
    pdus = framer.feed(raw)
    assert [(p.source, p.destination, p.apdu.hex()) for p in pdus] == [
        (x["source_wport"], x["destination_wport"], x["apdu_hex"]) for x in e
    ]
    one_by_one = WrapperFramer()
    got = [p for i in range(len(raw)) for p in one_by_one.feed(raw[i : i + 1])]
    assert got == pdus and one_by_one.buffered == 0


@check(
    "WRAPPER-NEG-VERSION",
    "WRAPPER-NEG-SRC-WPORT",
    "WRAPPER-NEG-DST-WPORT",
    "WRAPPER-NEG-LENGTH-LONG",
)
def check_wrapper_negative(vid: str) -> None:
    assert vector(vid)["expected"] == {"delivered": False}
    # a head-end bound to client 1 receiving from server 3 (the vectors' receiver)
    framer = WrapperFramer(max_apdu_length=2048, sources={3}, destinations={1})
    with pytest.raises(FramingError):
        framer.feed(vbytes(vid))
    with pytest.raises(FramingError):  # the stream stays refused
        framer.feed(b"")


# --- crypto primitives --------------------------------------------------------------------


@check("CRYPTO-GCM-GREENBOOK")
def check_gcm(vid: str) -> None:
    v, e = vector(vid), vector(vid)["expected"]
    ek, ak = key_of(v)
    cipher = Suite0Cipher(ek, ak)
    title = bytes.fromhex(v["system_title_hex"])
    assert (title + v["invocation_counter"].to_bytes(4, "big")).hex() == e["iv_hex"]
    sealed = cipher.seal(0x30, title, v["invocation_counter"], bytes.fromhex(v["plaintext_hex"]))
    assert sealed == vbytes(vid)
    assert sealed.hex() == e["ciphertext_hex"] + e["tag_hex"]
    assert cipher.open(0x30, title, v["invocation_counter"], sealed).hex() == v["plaintext_hex"]
    tampered = sealed[:-1] + bytes((sealed[-1] ^ 1,))
    with pytest.raises(DecryptionError) as info:
        cipher.open(0x30, title, v["invocation_counter"], tampered)
    assert ek.hex() not in str(info.value) and v["plaintext_hex"] not in str(info.value)


@check("CRYPTO-GMAC-HLS")
def check_gmac(vid: str) -> None:
    v, e = vector(vid), vector(vid)["expected"]
    ek, ak = key_of(v)
    challenge = bytes.fromhex(e["challenge_hex"])
    tag = Suite0Cipher(ek, ak).gmac(0x10, bytes.fromhex(v["system_title_hex"]), 1, challenge)
    assert tag == vbytes(vid)


# --- the guard ----------------------------------------------------------------------------


def test_every_vector_is_checked() -> None:
    assert len(all_vectors()) == 82
    assert set(CHECKS) == set(all_vectors())


@pytest.mark.parametrize("vid", sorted(all_vectors()))
def test_vector(vid: str) -> None:
    CHECKS[vid](vid)
