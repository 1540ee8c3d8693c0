"""Self-test of the gurux-dlms test peer: it must reproduce the gurux-made vectors byte for byte
and decode what it encodes.  Skipped when gurux-dlms is not installed."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

pytest.importorskip("gurux_dlms")

from tests.conftest import all_vectors

from . import gurux_peer as gx

pytestmark = pytest.mark.interop


VECTORS: dict[str, dict[str, Any]] = all_vectors()  # tests/vectors/vectors.json or $SAC_VECTORS


def vec(vid: str) -> bytes:
    return bytes.fromhex(VECTORS[vid]["hex"])


def wrapped(vid: str) -> bytes:
    v = VECTORS[vid]
    return bytes.fromhex(v.get("wrapped_hex", v["hex"]))


def _mgmt(vid: str) -> gx.Cipher:
    v = VECTORS[vid]
    key, title = bytes.fromhex(v["key_hex"]), bytes.fromhex(v["system_title_hex"])
    return gx.Cipher(key, title, v["invocation_counter"], italy=not v["system_title_on_wire"])


def test_tv3_public_client() -> None:
    assert gx.gx_aarq(wrapped=True) == vec("TV3-AARQ-PUBLIC")
    assert gx.gx_get_request(1, "0.0.42.0.0.255", 2, wrapped=True) == vec("TV3-GET-LDN")
    assert gx.gx_get_request(1, "0.0.43.1.1.255", 2, wrapped=True) == vec("TV3-GET-FC")
    assert gx.gx_aarq() == gx.strip_wrapper(vec("TV3-AARQ-PUBLIC"))
    assert gx.gx_rlrq() == vec("TV3-RLRQ")
    assert gx.gx_rlre() == vec("TV3-RLRE")


def test_tv4_ciphered_management_requests() -> None:
    c = _mgmt("TV4-GET-PDR-GGC")
    got = gx.gx_get_request(1, "0.0.96.1.10.255", 2, client_sap=1, cipher=c, wrapped=True)
    assert got == vec("TV4-GET-PDR-GGC")
    c = _mgmt("TV4-ACTION-RECONNECT-GGC")
    zero = {"type": "integer", "value": 0}
    kw: gx.Opts = {"client_sap": 1, "cipher": c, "wrapped": True}
    got = gx.gx_action_request(70, "0.0.96.3.10.255", 2, zero, **kw)
    assert got == vec("TV4-ACTION-RECONNECT-GGC")


@pytest.mark.parametrize("vid", ["TV4-GET-PDR-GGC", "TV4-ACTION-RECONNECT-GGC"])
def test_tv4_decrypt(vid: str) -> None:
    v, c = VECTORS[vid], _mgmt(vid)
    apdu = gx.strip_wrapper(vec(vid))
    plain = gx.gx_decrypt(apdu, c.key, c.system_title)
    assert plain.hex() == v["plaintext_hex"]
    xml = gx.gx_to_xml(apdu, key=c.key, system_title=c.system_title)
    assert v["plaintext_hex"] in xml.replace(" ", "").lower()
    d = gx.gx_decode_apdu(apdu, key=c.key, system_title=c.system_title)
    exp = v["expected"]["plaintext_apdu"]
    assert d["service"] == exp["service"]
    assert d["invoke_id_and_priority"] == int(exp["invoke_id_and_priority_hex"], 16)
    assert (d["class_id"], d["obis"]) == (exp["class_id"], exp["logical_name"])
    assert d.get("attribute", d.get("method")) == exp.get("attribute", exp.get("method"))
    assert d.get("value") == exp.get("parameters")
    assert d["ciphering"] == {"tag": 0xDB, "system_title": "", "security_control": 0x30,
                              "ic": v["invocation_counter"]}  # fmt: skip
    with pytest.raises(ValueError, match="mismatch"):
        gx.gx_decrypt(apdu, bytes(16), c.system_title)  # gurux alone would return garbage


@pytest.mark.parametrize("vid", ["TV5-SET-VALVE-SCRIPT", "TV5-SET-VALVE-TIME"])
def test_tv5_set(vid: str) -> None:
    exp = VECTORS[vid]["expected"]
    args = (exp["class_id"], exp["logical_name"], exp["attribute"], exp["value"])
    assert gx.gx_set_request(*args) == vec(vid)
    assert gx.gx_set_request(*args, client_sap=1, wrapped=True) == wrapped(vid)
    d = gx.gx_decode_apdu(vec(vid))
    assert (d["service"], d["class_id"], d["obis"]) == (exp["service"], 22, exp["logical_name"])
    assert (d["attribute"], d["value"]) == (exp["attribute"], exp["value"])


def test_tv1_decrypt_with_translator() -> None:
    v = VECTORS["TV1-01e5"]
    key, title = bytes.fromhex(v["key_hex"]), bytes.fromhex(v["system_title_hex"])
    apdu = gx.strip_wrapper(vec("TV1-01e5"))
    xml = gx.gx_to_xml(apdu, key=key).replace(" ", "").lower()
    assert v["plaintext_hex"] in xml
    assert gx.gx_decrypt(apdu, key).hex() == v["plaintext_hex"]
    d = gx.gx_decode_apdu(apdu, key=key)
    exp = v["expected"]["data_notification"]
    assert d["long_invoke_id_and_priority"] == exp["long_invoke_id_and_priority"]
    assert d["date_time"] is None
    assert d["value"] == {"type": "octet-string", "value": exp["compact_buffer_hex"]}
    # gurux re-encrypts the same notification to the captured frame, title on the wire ...
    body = {"type": "octet-string", "value": exp["compact_buffer_hex"]}
    c = gx.Cipher(key, title, v["invocation_counter"], italy=False)
    dn = gx.gx_data_notification(body, exp["long_invoke_id_and_priority"], cipher=c, wrapped=True)
    assert dn == vec("TV1-01e5")
    # ... and, Italian style, with an empty title (decodable only when the title is known)
    c = gx.Cipher(key, title, v["invocation_counter"])
    dn = gx.gx_data_notification(body, exp["long_invoke_id_and_priority"], cipher=c)
    assert dn[:3] == b"\xdb\x00\x3b" and dn[3:] == apdu[11:]
    assert gx.gx_decode_apdu(dn, key=key, system_title=title)["value"] == body


def test_data_notification_plain() -> None:
    true = {"type": "boolean", "value": True}
    dt_raw = bytes.fromhex("07e7011f0212221700000000")
    assert gx.gx_data_notification(true, 6543210) == vec("DN-PLAIN-NO-DATETIME")
    assert gx.gx_data_notification(true, 6543210, dt_raw) == vec("DN-PLAIN-DATETIME")
    body = {"type": "structure", "value": [{"type": "octet-string", "value": "2f01"}]}
    apdu = gx.gx_data_notification(body, 7, dt.datetime(2023, 1, 31, 18, 34, 23, tzinfo=dt.UTC))
    assert apdu.hex() == "0f000000070c07e7011fff12221700000000" + "020109022f01"
    d = gx.gx_decode_apdu(apdu)
    assert (d["service"], d["date_time"], d["value"]) == (
        "data-notification",
        "07e7011fff12221700000000",
        body,
    )


ALL_TYPES: list[dict[str, Any]] = [
    {"type": "null-data", "value": None},
    {"type": "boolean", "value": True},
    {"type": "boolean", "value": False},
    {"type": "bit-string", "value": "1010000011"},
    {"type": "bit-string", "value": ""},
    {"type": "integer", "value": -5},
    {"type": "long", "value": -300},
    {"type": "double-long", "value": -70000},
    {"type": "unsigned", "value": 200},
    {"type": "long-unsigned", "value": 5009},
    {"type": "double-long-unsigned", "value": 4_000_000_000},
    {"type": "long64", "value": -(2**40)},
    {"type": "long64-unsigned", "value": 2**64 - 1},
    {"type": "enum", "value": 3},
    {"type": "float32", "value": 1.5},
    {"type": "float64", "value": -2.25},
    {"type": "octet-string", "value": "0102"},
    {"type": "octet-string", "value": "ab" * 200},
    {"type": "visible-string", "value": 'a<b"&c'},
    {"type": "utf8-string", "value": "àé€"},
    {"type": "bcd", "value": 12},
    {"type": "date", "value": "07e9010fff"},
    {"type": "time", "value": "0a000000"},
    {"type": "date-time", "value": "07e9010fff0a000000800000"},
    {"type": "date-time", "value": "07e9010f030a1e2d0cff8880"},
    {"type": "array", "value": [{"type": "long-unsigned", "value": n} for n in (1, 2)]},
    {"type": "structure", "value": []},
]
ALL_TYPES.append({"type": "structure", "value": [*ALL_TYPES, {"type": "array", "value": []}]})


@pytest.mark.parametrize("tv", ALL_TYPES, ids=lambda tv: tv["type"])
def test_axdr_round_trip(tv: dict[str, Any]) -> None:
    assert gx.gx_decode_data(gx.gx_encode_data(tv)) == tv
    resp = gx.gx_decode_apdu(gx.gx_get_response(tv))
    assert (resp["service"], resp["value"]) == ("get-response-normal", tv)


def test_axdr_known_encodings() -> None:
    assert gx.gx_encode_data({"type": "double-long-unsigned", "value": 5009}).hex() == "0600001391"
    assert gx.gx_encode_data({"type": "bit-string", "value": "1010000011"}).hex() == "040aa0c0"
    assert gx.gx_get_response({"type": "double-long-unsigned", "value": 5009}).hex() == (
        "c401c1000600001391"
    )


def test_requests_decode() -> None:
    d = gx.gx_decode_apdu(gx.gx_get_request_next(3))
    assert (d["service"], d["block_number"]) == ("get-request-next", 3)
    items = [(1, "0.0.96.1.10.255", 2), (8, "0.0.1.0.0.255", 2)]
    d = gx.gx_decode_apdu(gx.gx_get_request_with_list(items))
    assert d["items"] == [{"class_id": c, "obis": o, "attribute": a} for c, o, a in items]
    start, end = dt.datetime(2025, 1, 1, tzinfo=dt.UTC), dt.datetime(2025, 1, 2, tzinfo=dt.UTC)
    d = gx.gx_decode_apdu(gx.gx_get_request_by_range("7.0.99.99.3.255", start, end))
    assert (d["class_id"], d["attribute"], d["access_selector"]) == (7, 2, 1)
    restricting, frm, to, cols = d["access_parameters"]["value"]
    assert [x["value"] for x in restricting["value"]] == [8, "0000010000ff", 2, 0]
    assert (frm["value"][:8], to["value"][:8], cols["value"]) == ("07e90101", "07e90102", [])
    d = gx.gx_decode_apdu(gx.gx_get_request_by_entry("7.0.99.99.3.255", 1, 10))
    assert d["access_selector"] == 2
    assert [x["value"] for x in d["access_parameters"]["value"]] == [1, 10, 1, 0]
    assert gx.gx_action_request(70, "0.0.96.3.10.255", 1).hex() == "c301c10046000060030aff0100"
    d = gx.gx_decode_apdu(gx.gx_aarq(b"12345678"))
    assert (d["service"], d["mechanism"], d["calling_authentication"]) == (
        "aarq",
        "Low",
        b"12345678".hex(),
    )


def test_responses() -> None:
    assert gx.gx_get_response(error=1).hex() == "c401c10101"
    assert gx.gx_set_response().hex() == "c501c100"
    assert gx.gx_action_response().hex() == "c701c10000"
    ret = {"type": "integer", "value": 5}
    assert gx.gx_action_response(0, ret).hex() == "c701c10001000f05"
    assert gx.gx_decode_apdu(gx.gx_action_response(0, ret))["value"] == ret
    assert gx.gx_aare().hex() == (
        "6129a109060760857405080101a203020100a305a103020100be10040e0800065f1f040000501f01f40007"
    )
    d = gx.gx_decode_apdu(gx.gx_aare(result=1, diagnostic=1))
    assert (d["service"], d["result"], d["diagnostic"]) == ("aare", 1, 1)


def test_get_response_blocks_reassemble() -> None:
    tv = {"type": "octet-string", "value": bytes(range(150)).hex()}
    blocks = [gx.gx_decode_apdu(b) for b in gx.gx_get_response_blocks(tv, max_pdu=64)]
    assert len(blocks) > 2
    assert [b["block_number"] for b in blocks] == list(range(1, len(blocks) + 1))
    assert [b["last_block"] for b in blocks] == [False] * (len(blocks) - 1) + [True]
    raw = bytes.fromhex("".join(b["raw_data"] for b in blocks))
    assert gx.gx_decode_data(raw) == tv
