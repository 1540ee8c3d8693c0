"""``GetEvents`` and ``GetConnections`` are written by :mod:`sac.web.soap_pages`, not by
spyne: the bytes are spyne's for the same page (canonical XML compared), on both stores,
with every optional field present and absent, texts to escape, and a page with a cursor;
over HTTP, a page of them answers as the WSDL says (issue 23)."""

from __future__ import annotations

import datetime as dt

import pytest_twisted
from lxml import etree
from twisted.internet import threads

from sac.dlms import Obis
from sac.store import Actor, Connection, ConnectionPage, Event, EventPage, Ingest
from sac.web import soap_types
from sac.web.soap_pages import connections_answer, events_answer
from sac.web.soap_types import _connection_info, _event_info
from tests.store.conftest import Backend
from tests.store.test_operations import T0, ldn, opened
from tests.web.test_soap_export import NS, post, same, serving

LOGBOOK = Obis("7.0.99.98.1.255")
ODD = 'push <&> "più"\r'  # escaped, a CR as a character reference, not ASCII


def spyne_events(page: EventPage) -> soap_types.EventPage:
    return soap_types.EventPage(events=[_event_info(e) for e in page.events], cursor=page.cursor)


def spyne_connections(page: ConnectionPage) -> soap_types.ConnectionPage:
    infos = [_connection_info(c) for c in page.connections]
    return soap_types.ConnectionPage(connections=infos, cursor=page.cursor)


@pytest_twisted.ensureDeferred
async def test_get_events_is_spynes_bytes_for_the_same_page(backend: Backend) -> None:
    store = await opened(backend, meters=2)
    events = [
        Event(ldn(0), LOGBOOK, 80, T0, T0, "poll"),  # an alarm (tamper): open
        Event(ldn(0), LOGBOOK, 94, T0 + dt.timedelta(minutes=1), T0, ODD, counter=7),
        Event(ldn(1), LOGBOOK, 90, T0 + dt.timedelta(minutes=2, microseconds=5), T0, "cf48"),
        Event(ldn(1), LOGBOOK, 999, T0 + dt.timedelta(minutes=3), T0, "poll", counter=0),
        Event(
            ldn(1),
            LOGBOOK,
            5,
            T0 + dt.timedelta(minutes=4),
            T0,
            "x",
            severity="alarm",
            category="valve",
        ),
    ]
    assert (await store.readings.ingest(Ingest(events=events))).events == 5
    first = await store.exports.events(T0, T0 + dt.timedelta(hours=1), limit=2)
    await store.events.acknowledge(first.events[1].id, Actor("otto"), ODD)
    end = T0 + dt.timedelta(hours=1)
    cursor, pages = None, 0
    while True:  # pages of 2 (a cursor), then the last one (none)
        page = await store.exports.events(T0, end, cursor=cursor, limit=2)
        same(await events_answer(page), "GetEvents", spyne_events(page))
        cursor, pages = page.cursor, pages + 1
        if cursor is None:
            break
    assert pages == 3
    whole = await store.exports.events(T0, end, ldn=ldn(0))
    assert [e.acknowledgement is not None for e in whole.events] == [False, True]
    same(await events_answer(whole), "GetEvents", spyne_events(whole))
    empty = EventPage((), None)
    same(await events_answer(empty), "GetEvents", spyne_events(empty))
    await store.close()


@pytest_twisted.ensureDeferred
async def test_get_connections_is_spynes_bytes_for_the_same_page(backend: Backend) -> None:
    store = await opened(backend, meters=1)

    def session(minutes: int, **kw: object) -> Connection:
        values: dict = dict(peer="192.0.2.7", kind="push", outcome="stored", duration_ms=40)
        values.update(kw)
        return Connection(ldn(0), T0 + dt.timedelta(minutes=minutes), **values)

    await store.connections.add(
        [
            session(1),
            session(2, kind="poll", outcome="partial", read=("daily_profile", ODD)),
            session(3, skipped=("valve_state: object-undefined", "<x>"), detail=ODD),
            session(4, peer="[2001:db8::1]:4059", duration_ms=0, read=("a",), skipped=("b",)),
        ]
    )
    end = T0 + dt.timedelta(hours=1)
    for limit in (3, 1000):
        page = await store.connections.page(ldn(0), T0, end, limit=limit)
        assert (page.cursor is not None) == (limit == 3)
        same(await connections_answer(page), "GetConnections", spyne_connections(page))
    empty = ConnectionPage((), None)
    same(await connections_answer(empty), "GetConnections", spyne_connections(empty))
    await store.close()


@pytest_twisted.ensureDeferred
async def test_get_events_and_connections_over_soap(backend: Backend) -> None:
    store, port = await serving(backend, 1, 0)
    meter = "SAC0000000000000"
    events = [
        Event(meter, LOGBOOK, 80 + i % 20, T0 + dt.timedelta(minutes=i), T0, "poll")
        for i in range(3000)
    ]
    await store.readings.ingest(Ingest(events=events))
    await store.connections.add(
        [
            Connection(meter, T0 + dt.timedelta(minutes=i), "192.0.2.7", "push", "stored", 40)
            for i in range(3000)
        ]
    )
    span = {"start": "2026-01-01T00:00:00Z", "end": "2027-01-01T00:00:00Z", "limit": 10_000}
    number = port.getHost().port
    try:
        got = await threads.deferToThread(post, number, "GetEvents", **span)
        connections = await threads.deferToThread(post, number, "GetConnections", ldn=meter, **span)
    finally:
        await port.stopListening()
    assert got.status_code == 200 and connections.status_code == 200, got.text[:300]
    infos = etree.fromstring(got.content).findall(f".//{{{NS}}}EventInfo")
    assert len(infos) == 3000 and infos[1].find(f"{{{NS}}}code").text == "81"
    rows = etree.fromstring(connections.content).findall(f".//{{{NS}}}ConnectionInfo")
    assert len(rows) == 3000 and rows[0].find(f"{{{NS}}}outcome").text == "stored"
    await store.close()
