"""The read plan against gurux-dlms playing the meter (tests/interop/gurux_peer.py): after a
gurux push, the SAC's plan requests are decrypted and decoded by gurux, and gurux builds and
ciphers every answer -- the values, the scaler_units, the logbooks' columns and their rows by
range -- so that what the SAC stores comes from an independent implementation's bytes."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest_twisted
from twisted.internet.error import ConnectionDone

from sac.dlms import Obis
from sac.dlms.cosemtime import CosemDateTime
from tests.acquisition.conftest import Backend, Sac
from tests.acquisition.test_gurux_crosscheck import (
    GENERIC,
    KEY,
    LDN,
    MANAGEMENT,
    PUSH_IC,
    compact,
    connect,
    gurux_push,
    meter_answer,
    open_sac,
)
from tests.interop.gurux_peer import gx_decode_apdu, gx_get_response

NOW = int(time.time())
EVENT_AT = NOW - 3600  # the valve closed an hour ago, event 30 in the metrological logbook


def u(n: int, kind: str = "long-unsigned") -> dict[str, Any]:
    return {"type": kind, "value": n}


def column(class_id: int, obis: str) -> dict[str, Any]:
    return {
        "type": "structure",
        "value": [
            u(class_id),
            {"type": "octet-string", "value": bytes(Obis(obis))},
            u(2, "integer"),
            u(0),
        ],
    }


def columns(*pairs: tuple[int, str]) -> dict[str, Any]:
    return {"type": "array", "value": [column(c, o) for c, o in pairs]}


def scaler_unit(scaler: int, unit: int) -> dict[str, Any]:
    return {"type": "structure", "value": [u(scaler, "integer"), u(unit, "enum")]}


def rows(*values: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "array", "value": [{"type": "structure", "value": v} for v in values]}


UNIX = (1, "0.0.1.1.0.255")
# what the gurux meter answers, by (class, logical name, attribute); absent: object-undefined
ANSWERS: dict[tuple[int, str, int], dict[str, Any]] = {
    (3, "0.0.96.6.6.255", 2): u(3000),  # battery: 3,000 days
    (3, "0.0.96.6.6.255", 3): scaler_unit(0, 4),
    (3, "7.0.96.5.1.255", 2): u(0x0100),  # current diagnostic: bit 8
    (3, "7.0.96.5.1.255", 3): scaler_unit(0, 255),
    (7, "7.0.99.98.0.255", 3): columns(UNIX, (1, "0.0.96.15.2.255"), (1, "0.0.96.11.2.255")),
    (7, "7.0.99.98.0.255", 2): rows([u(NOW - 60, "double-long-unsigned"), u(17), u(12)]),
    (7, "7.0.99.98.1.255", 3): columns(UNIX, (1, "0.0.96.11.1.255"), (1, "0.0.96.15.1.255")),
    (7, "7.0.99.98.1.255", 2): rows([u(EVENT_AT, "double-long-unsigned"), u(30), u(3)]),
    (8, "0.0.1.0.0.255", 2): {
        "type": "octet-string",
        "value": CosemDateTime.from_datetime(
            dt.datetime.fromtimestamp(NOW, dt.UTC), inverted_deviation=True
        ).to_bytes(),
    },
    (7, "7.0.99.99.3.255", 3): columns(UNIX, (3, "7.0.13.2.0.255")),
    (3, "7.0.13.2.0.255", 3): scaler_unit(-3, 14),
    (7, "7.0.99.99.3.255", 2): rows(
        [u(NOW - 7200, "double-long-unsigned"), u(987_000, "double-long-unsigned")]
    ),
}


@pytest_twisted.ensureDeferred
async def test_the_plan_read_from_a_gurux_meter(backend: Backend, sacs: list[Sac]) -> None:
    store, _sac, port = await open_sac(backend, sacs, GENERIC, by_ip=False, read_plan=True)
    meter = await connect(port)
    meter.transport.write(gurux_push(compact(management_fc=41), title_on_wire=True))
    asked, ic = [], PUSH_IC
    while True:
        pdu = await meter.frames.get()
        if pdu is None:
            break
        source, destination, apdu = pdu
        assert (source, destination) == (MANAGEMENT, 1)
        request = gx_decode_apdu(apdu, KEY)  # gurux decrypts and decodes the SAC's request
        assert request["service"] == "get-request-normal", request
        key = (request["class_id"], request["obis"], request["attribute"])
        asked.append((*key, request.get("access_selector")))
        if request.get("access_selector") == 1:  # by range: on the UNIX time column, recent
            restriction = request["access_parameters"]["value"]
            start = restriction[1]["value"]
            assert NOW - 8 * 86400 <= start <= NOW, restriction
        ic += 1
        iid = request["invoke_id_and_priority"]
        options = meter_answer(ic, omit_title=False)
        value = ANSWERS.get(key)
        answer = (
            gx_get_response(value, iid=iid, **options)
            if value
            else gx_get_response(error=4, iid=iid, **options)
        )
        meter.transport.write(answer)
    assert meter.reason is not None and meter.reason.check(ConnectionDone), meter.reason
    # the plan's order: the battery and the diagnostic with their scaler_units, each logbook's
    # columns then its rows by range, the clock, the daily profile (and its index's
    # scaler_unit), the parameter logbook (refused: the session goes on to its clean end)
    assert asked == [
        (3, "0.0.96.6.6.255", 2, None),
        (3, "0.0.96.6.6.255", 3, None),
        (3, "7.0.96.5.1.255", 2, None),
        (3, "7.0.96.5.1.255", 3, None),
        (7, "7.0.99.98.0.255", 3, None),
        (7, "7.0.99.98.0.255", 2, 1),
        (7, "7.0.99.98.1.255", 3, None),
        (7, "7.0.99.98.1.255", 2, 1),
        (8, "0.0.1.0.0.255", 2, None),
        (7, "7.0.99.99.3.255", 3, None),
        (7, "7.0.99.99.3.255", 2, 1),
        (3, "7.0.13.2.0.255", 3, None),
        (7, "7.0.99.16.0.255", 3, None),
    ]
    row = await store.meters.get(LDN)
    assert row.battery_value == 3000 and row.battery_unit == 4 and row.diagnostic == 0x0100
    events = {(e.code, e.counter) for e in await store.events.latest(LDN)}
    assert events == {(12, 17), (30, 3)}
    marks = {m.quantity for m in await store.readings.plan_marks(LDN)}
    assert "parameter_logbook" in marks  # refused (object-undefined), marked all the same
