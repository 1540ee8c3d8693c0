"""The SOAP exports' answers (``ExportIndexReadings``, ``GetReadings``,
``ExportMonthStartIndexes``) are written by :mod:`sac.web.soap_export`, not by spyne: the
bytes are spyne's for the same page (canonical XML compared), and a page of 10,000
readings is written in parts with a turn of the reactor between two, for the other requests
meanwhile (issue 23)."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest_twisted
import requests
from lxml import etree
from twisted.internet import reactor, threads
from twisted.internet.defer import ensureDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.web.server import Site

from sac import gasday
from sac.dlms import Obis
from sac.services.readings import INDEX
from sac.store import ExportedReading, ExportPage, NewMeter, Reading, ReadingPage, Role
from sac.web import soap_types
from sac.web.app import Web, WebSettings
from sac.web.history import (
    STEP,
    STORE_SLICE,
    converted,
    index_objects,
    reading_slices,
    readings_page,
)
from sac.web.soap import NS, soap_application
from sac.web.soap_export import exported, month_start_answer, readings_answer
from sac.web.soap_types import _reading_info
from sac.web.spyne_compat import Serialised, SoapResource, _MethodContext
from tests.store.conftest import Backend
from tests.web.conftest import FAST, REGISTRY

PASSWORD = "an erp's long password"
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
# value, scaler, unit: a Decimal with an exponent (spyne writes str()), a float, no unit
VALUES = [(1, 3, 14), (12345, -3, 14), (7, None, None), (2.5, -1, 13), (0, 0, 255)]


def envelope(operation: str, **fields: Any) -> bytes:
    inner = "".join(f"<tns:{k}>{v}</tns:{k}>" for k, v in fields.items() if v is not None)
    return (
        f'<soap:Envelope xmlns:soap="{SOAP_ENV}" xmlns:tns="{NS}"><soap:Body>'
        f"<tns:{operation}>{inner}</tns:{operation}></soap:Body></soap:Envelope>"
    ).encode()


def post(port: int, operation: str, **fields: Any) -> requests.Response:
    """One call as an ERP makes it (in a thread: it blocks)."""
    auth = base64.b64encode(f"erp:{PASSWORD}".encode()).decode()
    return requests.post(
        f"http://127.0.0.1:{port}/soap",
        data=envelope(operation, **fields),
        headers={"Content-Type": "text/xml; charset=utf-8", "Authorization": f"Basic {auth}"},
        timeout=120,
    )


async def serving(backend: Backend, meters: int, hours: int) -> tuple[Any, Any]:
    """A store with ``meters`` x ``hours`` index readings, and the SAC's web on a port."""
    store = backend.make(password_params=FAST)
    await store.open()
    await store.users.add("erp", PASSWORD, Role.VIEWER)
    batch = []
    for m in range(meters):
        ldn = f"SAC{m:013d}"
        await store.meters.add(NewMeter(ldn, pdr=f"{m:014d}" if m % 2 else None))
        for h in range(hours):
            at = T0 + dt.timedelta(hours=h, milliseconds=h % 3)
            batch.append(Reading(ldn, INDEX, 2, 10_000 * h + m, at, "poll", at, -3, 14))
    for i in range(0, len(batch), 20_000):
        await store.readings.add(batch[i : i + 20_000])
    web = Web(store, REGISTRY, settings=WebSettings(secure_cookies=False))
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(web.resource()))
    return store, port


def big_page(count: int) -> ExportPage:
    """``count`` readings of 100 meters, as the store gives them for an answer."""
    rows = []
    for i in range(count):
        at = T0 + dt.timedelta(hours=i % 1000)
        ldn, pdr = f"SAC{i // 1000:013d}", f"{i // 1000:014d}"
        rows.append(ExportedReading(ldn, str(INDEX), 2, i, None, -3, 14, at, at, "poll", pdr))
    return ExportPage(tuple(rows), None)


async def one_slice(page: ExportPage) -> AsyncIterator[ExportPage]:
    yield page


def turns_until(done: Callable[[], bool]) -> list[int]:
    """The reactor's turns until ``done()``, counted from now: a call scheduled on each
    turn (the first before the work starts), as a push's bytes or a ``/health`` request
    waiting would be read meanwhile."""
    counted = [0]

    def turn() -> None:
        if not done():
            counted[0] += 1
            reactor.callLater(0, turn)

    reactor.callLater(0, turn)
    return counted


@pytest_twisted.ensureDeferred
async def test_a_page_of_10000_readings_is_written_with_the_reactor_handed_back() -> None:
    page = big_page(10_000)
    turns = turns_until(lambda: written.called)
    written = ensureDeferred(readings_answer("ExportIndexReadings", one_slice(page)))
    assert not written.called  # handed back before the end, though nothing else was awaited
    answer = await written
    assert turns[0] >= 10_000 // STEP - 1  # a turn between two parts of STEP readings
    root = etree.fromstring(answer.body)
    assert len(root.findall(f".//{{{NS}}}ReadingInfo")) == 10_000


@pytest_twisted.ensureDeferred
async def test_converted_hands_the_reactor_back_between_two_parts() -> None:
    seen: list[int] = []
    looked: list[int] = []
    reactor.callLater(0, lambda: looked.append(len(seen)))  # waiting when the work starts
    done = ensureDeferred(converted(range(3 * STEP + 1), lambda i: seen.append(i) or i))
    assert not done.called and len(seen) == STEP  # the first part, then the reactor's turn
    assert await done == list(range(3 * STEP + 1))
    assert looked == [STEP]  # the call waiting ran between the first part and the second


@pytest_twisted.ensureDeferred
async def test_a_page_of_10000_readings_over_soap(backend: Backend) -> None:
    _, port = await serving(backend, 100, 100)

    def export(limit: int) -> requests.Response:
        return post(
            port.getHost().port,
            "ExportIndexReadings",
            start="2026-01-01T00:00:00Z",
            end="2026-02-01T00:00:00Z",
            limit=limit,
        )

    try:
        answer = await threads.deferToThread(export, 10_000)
    finally:
        await port.stopListening()
    assert answer.status_code == 200, answer.text[:500]
    root = etree.fromstring(answer.content)
    infos = root.findall(f".//{{{NS}}}ReadingInfo")
    assert len(infos) == 10_000 and root.find(f".//{{{NS}}}cursor") is None
    values = [info.find(f"{{{NS}}}value/{{{NS}}}value").text for info in infos[:3]]
    assert values == ["0.000", "10.000", "20.000"]  # meter 0, hours 0 to 2: 10,000 x h litres


def spyne_bytes(operation: str, result: Any) -> bytes:
    """What spyne writes for ``operation`` answering ``result`` (its model objects)."""
    application = soap_application(None)
    server = SoapResource(application)._server
    ctx = _MethodContext(server, None, application.out_protocol.mime_type)
    ctx.descriptor = application.interface.service_method_map[f"{{{NS}}}{operation}"][0]
    ctx.out_object = [result]
    server.get_out_string(ctx)
    return b"".join(ctx.out_string)


def spyne_readings(page: ReadingPage) -> Any:
    """The page as spyne's model: what the SOAP operations answered before (issue 23)."""
    infos = [_reading_info(r, page.pdrs.get(r.ldn)) for r in page.readings]
    return soap_types.ReadingPage(readings=infos, cursor=page.cursor)


def canonical(body: bytes) -> bytes:
    return etree.tostring(etree.fromstring(body), method="c14n")


def same(ours: Serialised, operation: str, theirs: Any) -> None:
    expected = spyne_bytes(operation, theirs)
    assert canonical(ours.body) == canonical(expected)
    assert ours.body.partition(b"\n")[0] == expected.partition(b"\n")[0]  # the declaration


@pytest_twisted.ensureDeferred
async def test_the_answers_are_spynes_bytes_for_the_same_page(backend: Backend) -> None:
    store = backend.make(password_params=FAST)
    await store.open()
    plain, bare = "SAC0000000000001", "SAC0000000000002"
    await store.meters.add(NewMeter(plain, pdr="11111111111111"))
    await store.meters.add(NewMeter(bare))
    odd = 'push <&> "più"\r'  # escaped, a CR as a character reference, not ASCII
    readings = [
        Reading(plain, Obis("0.0.96.1.0.255"), 2, None, T0, "poll", T0, raw=b"\x09\x01\xab")
    ]
    for h, (value, scaler, unit) in enumerate(VALUES):
        at = T0 + dt.timedelta(hours=h, microseconds=h)
        late = at + dt.timedelta(seconds=h % 2)  # received after captured, or with it
        readings.append(Reading(plain, INDEX, 2, value, late, odd, at, scaler, unit))
        readings.append(Reading(bare, INDEX, 2, value, at, "poll", at, scaler, unit))
    await store.readings.add(readings)
    end = T0 + dt.timedelta(days=1)
    index, by_profile = index_objects(REGISTRY)

    for operation, query, limit in (
        ("GetReadings", {"ldn": plain}, 1000),
        ("ExportIndexReadings", {"obis": index, "attribute": 2, "by_profile": by_profile}, 7),
        ("ExportIndexReadings", {"obis": index, "attribute": 2}, 1000),
    ):
        page = await readings_page(store, T0, end, limit=limit, **query)
        assert page.readings and (page.cursor is not None) == (limit == 7)
        ours = await readings_answer(
            operation, reading_slices(store, T0, end, limit=limit, exported=True, **query)
        )
        same(ours, operation, spyne_readings(page))
    empty = reading_slices(store, end, end + dt.timedelta(hours=1), ldn=plain, exported=True)
    same(
        await readings_answer("GetReadings", empty),
        "GetReadings",
        spyne_readings(ReadingPage((), None)),
    )

    # the month start: a meter with its index at the gas month's start, one without
    closing = dt.datetime(2026, 2, 1, 4, 30, tzinfo=dt.UTC)  # 05:30 Rome, gas day's end 06:00
    await store.readings.add([Reading(plain, INDEX, 2, 4321, closing, "cf48", closing, -3, 14)])
    month = await store.exports.month_start(2026, 2, obis=index, by_profile=by_profile)
    assert [r.reading is not None for r in month.rows] == [True, False]
    theirs = soap_types.MonthStartPage(
        monthStart=gasday.month_start(2026, 2),
        rows=[
            soap_types.MonthStartInfo(
                ldn=row.ldn,
                pdr=row.pdr,
                index=_reading_info(row.reading, row.pdr) if row.reading else None,
            )
            for row in month.rows
        ],
        cursor=month.cursor,
    )
    ours = await month_start_answer("ExportMonthStartIndexes", 2026, 2, month)
    same(ours, "ExportMonthStartIndexes", theirs)
    await store.close()


@pytest_twisted.ensureDeferred
async def test_a_page_asked_in_slices_is_the_page_asked_at_once(backend: Backend) -> None:
    store, port = await serving(backend, 7, 400)
    await port.stopListening()
    assert 2 * STORE_SLICE > 1100 > STORE_SLICE  # two queries a page of 1,100
    end = T0 + dt.timedelta(days=30)
    cursor, whole, sliced = None, [], []
    for _ in range(3):
        at_once = await store.exports.readings(T0, end, obis=INDEX, cursor=cursor, limit=1100)
        sliced_page = await readings_page(store, T0, end, obis=INDEX, cursor=cursor, limit=1100)
        assert sliced_page == at_once
        tuples = await store.exports.exported(T0, end, obis=INDEX, cursor=cursor, limit=1100)
        assert tuples.cursor == at_once.cursor  # the same query, the same pages
        assert tuples.readings == tuple(exported(r, at_once.pdrs[r.ldn]) for r in at_once.readings)
        whole += at_once.readings
        sliced += sliced_page.readings
        cursor = at_once.cursor
    assert cursor is None and len(whole) == 2800 and whole == sliced
    await store.close()


@pytest_twisted.ensureDeferred
async def test_the_json_api_s_page_of_10000_readings(backend: Backend) -> None:
    store, port = await serving(backend, 1, 10_000)
    secret, _ = await store.tokens.create("erp", "billing")
    url = (
        f"http://127.0.0.1:{port.getHost().port}/api/v1/meters/SAC0000000000000/readings"
        "?object=converted_volume_index&from=2026-01-01T00:00:00Z&to=2027-06-01T00:00:00Z"
        "&limit=10000"
    )
    headers = {"Authorization": f"Bearer {secret}"}
    try:
        answer = await threads.deferToThread(requests.get, url, headers=headers, timeout=120)
    finally:
        await port.stopListening()
    assert answer.status_code == 200, answer.text[:500]
    readings = answer.json()["readings"]
    assert len(readings) == 10_000 and answer.json().get("next") is None
