"""The SOAP API as an ERP uses it: zeep loads the WSDL the SAC serves on a real port and
calls every operation against a SAC whose meters are simulated and push through the real
listener -- faults, roles, the three ways to sign in, and a billing export of 100,000
readings interrupted and resumed from its cursor -- on both stores."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import pytest_twisted
import requests
import zeep
from twisted.internet import reactor, threads
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.web.server import Site
from zeep.transports import Transport
from zeep.wsse.username import UsernameToken

from sac.dlms import Obis
from sac.errors import BadCursor, InvalidRequest
from sac.profiles import STANDARD_OBJECTS, CosemRef, MeterProfile, ProfileRegistry
from sac.services.readings import INDEX
from sac.store import Actor, Event, Ingest, NewMeter, Reading, Role
from sac.web.app import Web, WebSettings
from sac.web.errors import soap_fault
from sac.web.soap import NS
from tests.acquisition.conftest import REGISTRY, Sac, push_once, sacs, started  # noqa: F401
from tests.store.conftest import Backend

PASSWORD = "an erp's long password"
OPERATIONS = {
    "ListMeters",
    "GetMeter",
    "GetReadings",
    "ExportIndexReadings",
    "ExportMonthStartIndexes",
    "GetDailyConsumption",
    "GetEvents",
    "GetConnections",
    "GetValveState",
    "RequestValve",
    "GetCommandStatus",
    "GetOpenAlarms",
    "AcknowledgeAlarm",
    "StartJob",
    "GetJob",
    "ListJobs",
    "CancelJob",
    "RequestCommand",
    "ListCommands",
    "CancelCommand",
}
LOGBOOK = "7.0.99.98.0.255"
CODES = (30, 74, 80, 20, 102, 12)  # logged by the test's meters, one an unknown code


class Erp:
    """The SAC (push listener + web on real ports of 127.0.0.1) and zeep clients of it."""

    def __init__(self, store: Any, fleet: Any, sac: Sac, push_port: int, web_port: int) -> None:
        self.store, self.fleet, self.sac, self.push_port = store, fleet, sac, push_port
        self.wsdl = f"http://127.0.0.1:{web_port}/soap?wsdl"

    def client(self, user: str | None = "erp", password: str = PASSWORD, **kw: Any) -> Any:
        """A zeep client signed in with HTTP Basic (runs in a thread: zeep blocks)."""
        session = requests.Session()
        if user is not None:
            session.auth = (user, password)
        return zeep.Client(self.wsdl, transport=Transport(session=session, timeout=30), **kw)

    async def call(self, work: Callable[[], Any]) -> Any:
        return await threads.deferToThread(work)

    async def fault(self, work: Callable[[], Any]) -> tuple[str, str]:
        def run() -> tuple[str, str]:
            with pytest.raises(zeep.exceptions.Fault) as raised:
                work()
            return raised.value.code.rpartition(":")[2], raised.value.message

        return await threads.deferToThread(run)


async def erp_sac(
    backend: Backend,
    sacs: list[Sac],  # noqa: F811
    count: int = 3,
    pushing: int = 3,
) -> Erp:
    store, fleet, sac, push_port = await started(backend, sacs, count)
    await store.users.add("erp", PASSWORD, Role.OPERATOR)
    await store.users.add("auditor", PASSWORD, Role.VIEWER)
    web = Web(store, REGISTRY, settings=WebSettings(secure_cookies=False))
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(web.resource()))
    sac.web_port = port  # stopped with the listener
    stop = sac.stop

    async def stop_both() -> None:
        await port.stopListening()
        await stop()

    sac.stop = stop_both  # type: ignore[method-assign]
    for meter in fleet.meters[:pushing]:  # simulated meters call in: real values
        await push_once(push_port, meter)
    return Erp(store, fleet, sac, push_port, port.getHost().port)


@pytest_twisted.ensureDeferred
async def test_the_wsdl_names_every_operation_and_documents_its_faults(
    backend: Backend,
    sacs: list[Sac],  # noqa: F811
) -> None:
    erp = await erp_sac(backend, sacs, 1)
    client = await erp.call(erp.client)
    [service] = client.wsdl.services.values()
    [port] = service.ports.values()
    assert set(port.binding._operations) == OPERATIONS
    assert port.binding_options["address"] == erp.wsdl.removesuffix("?wsdl")
    text = await erp.call(lambda: requests.get(erp.wsdl, timeout=10).text)
    for fault in ("UnknownMeterFault", "BadRangeFault", "PageTooLargeFault", "BadCursorFault"):
        assert f'name="{fault}"' in text
    assert f'targetNamespace="{NS}"' in text and "every converted-volume index" in text


@pytest_twisted.ensureDeferred
async def test_meters_and_their_last_values_as_the_pushes_left_them(
    backend: Backend,
    sacs: list[Sac],  # noqa: F811
) -> None:
    erp = await erp_sac(backend, sacs, 3)
    client = await erp.call(erp.client)
    first = await erp.call(lambda: client.service.ListMeters(limit=2))
    assert first.total == 3 and len(first.meters.MeterInfo) == 2
    rest = await erp.call(lambda: client.service.ListMeters(after=first.next, limit=2))
    assert rest.next is None
    ldns = [m.ldn for m in first.meters.MeterInfo + rest.meters.MeterInfo]
    assert ldns == sorted(m.ldn for m in erp.fleet.meters)
    simulated = erp.fleet.meters[0]
    meter = await erp.call(lambda: client.service.GetMeter(simulated.ldn))
    assert meter.pdr == simulated.pdr and meter.systemTitle == simulated.system_title.hex().upper()
    assert meter.index.value == Decimal(simulated.index_litres).scaleb(-3)
    assert (meter.index.unit, meter.index.unitName) == (14, "Sm³")
    assert meter.lastConnection.utcoffset() == dt.timedelta(0) and meter.state == "active"
    assert meter.valveStateName == "open" and meter.diagnostic is not None
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    quiet = await erp.call(lambda: client.service.ListMeters(changedSince=later))
    assert quiet.total == 0
    fault = await erp.fault(lambda: client.service.GetMeter("FIO9999999999999"))
    assert fault == ("Client.UnknownMeter", "no meter with LDN FIO9999999999999")
    fault = await erp.fault(lambda: client.service.ListMeters(limit=1001))
    assert fault[0] == "Client.PageTooLarge"


@pytest_twisted.ensureDeferred
async def test_readings_and_events_by_meter_and_by_time(
    backend: Backend,
    sacs: list[Sac],  # noqa: F811
) -> None:
    erp = await erp_sac(backend, sacs, 2)
    simulated = erp.fleet.meters[1]
    t0 = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
    hours = [t0 + dt.timedelta(hours=h) for h in range(48)]
    await erp.store.readings.add(
        [
            Reading(simulated.ldn, INDEX, 2, 1000 + h, t, "poll", t, -3, 14)
            for h, t in enumerate(hours)
        ]
    )
    events = [
        Event(m.ldn, Obis(LOGBOOK), code, t0 + dt.timedelta(hours=i), t0, "poll", i)
        for i, (m, code) in enumerate(zip(erp.fleet.meters * 3, CODES, strict=True))
    ]
    await erp.store.readings.ingest(Ingest(events=events))
    client = await erp.call(erp.client)
    page = await erp.call(
        lambda: client.service.GetReadings(
            simulated.ldn, t0, t0 + dt.timedelta(hours=24), "7.0.13.2.0.255", None, 10
        )
    )
    got = page.readings.ReadingInfo
    assert [r.value.value for r in got] == [Decimal(1000 + h).scaleb(-3) for h in range(10)]
    assert got[0].captured == t0 and got[0].obis == "7.0.13.2.0.255" and page.cursor
    more = await erp.call(
        lambda: client.service.GetReadings(
            simulated.ldn, t0, t0 + dt.timedelta(hours=24), "7.0.13.2.0.255", page.cursor, 10
        )
    )
    assert more.readings.ReadingInfo[0].captured == t0 + dt.timedelta(hours=10)
    every = await erp.call(
        lambda: client.service.GetEvents(t0, t0 + dt.timedelta(days=1), None, None, 100)
    )
    assert [e.code for e in every.events.EventInfo] == list(CODES)
    # named and classed, an unknown code said so
    named = {e.code: (e.name_en, e.name_it, e.category, e.severity) for e in every.events.EventInfo}
    assert named[20] == ("unknown (code 20)", "sconosciuto (codice 20)", "unknown", "info")
    assert named[102] == ("valve closed on a leak", "valvola chiusa per perdita", "valve", "alarm")
    assert named[74][2:] == ("battery", "warning")
    one = await erp.call(
        lambda: client.service.GetEvents(t0, t0 + dt.timedelta(days=1), simulated.ldn)
    )
    assert {e.ldn for e in one.events.EventInfo} == {simulated.ldn}
    for args, code in (
        ((simulated.ldn, t0, t0 - dt.timedelta(hours=1)), "Client.BadRange"),
        ((simulated.ldn, t0.replace(tzinfo=None), t0 + dt.timedelta(hours=1)), "Client.BadRange"),
        ((simulated.ldn, t0, t0 + dt.timedelta(hours=1), "not-obis"), "Client.BadInput"),
        ((simulated.ldn, t0, t0 + dt.timedelta(hours=1), None, "garbage"), "Client.BadCursor"),
        (
            (simulated.ldn, t0, t0 + dt.timedelta(hours=1), None, None, 10_001),
            "Client.PageTooLarge",
        ),
        (("FIO9999999999999", t0, t0 + dt.timedelta(hours=1)), "Client.UnknownMeter"),
    ):
        fault = await erp.fault(lambda args=args: client.service.GetReadings(*args))
        assert fault[0] == code, (args, fault)
    # a cursor of one query given to another
    fault = await erp.fault(
        lambda: client.service.GetReadings(
            simulated.ldn, t0, t0 + dt.timedelta(hours=23), "7.0.13.2.0.255", page.cursor
        )
    )
    assert fault[0] == "Client.BadCursor" and "another query" in fault[1]


@pytest_twisted.ensureDeferred
async def test_a_valve_closed_through_soap_reaches_the_meter(
    backend: Backend,
    sacs: list[Sac],  # noqa: F811
) -> None:
    erp = await erp_sac(backend, sacs, 1)
    [simulated] = erp.fleet.meters
    client = await erp.call(erp.client)
    before = await erp.call(lambda: client.service.GetValveState(simulated.ldn))
    assert (before.state, before.stateName, before.pendingCommands) == (1, "open", 0)
    command = await erp.call(lambda: client.service.RequestValve(simulated.ldn, "close"))
    assert (command.state, command.kind, command.requestedBy) == ("pending", "valve-close", "erp")
    assert (
        await erp.call(lambda: client.service.GetValveState(simulated.ldn))
    ).pendingCommands == 1
    await push_once(erp.push_port, simulated)  # the meter calls in: the SAC closes the valve
    done = await erp.call(lambda: client.service.GetCommandStatus(command.id))
    assert (done.state, done.final) == ("done", True) and done.finished is not None
    after = await erp.call(lambda: client.service.GetValveState(simulated.ldn))
    assert (after.state, after.stateName) == (0, "closed") and not simulated.valve_open
    fault = await erp.fault(lambda: client.service.GetCommandStatus(999_999))
    assert fault[0] == "Client.UnknownCommand"
    # a viewer reads but may not command
    viewer = await erp.call(lambda: erp.client("auditor"))
    fault = await erp.fault(lambda: viewer.service.RequestValve(simulated.ldn, "enable-opening"))
    assert fault[0] == "Client.Forbidden"
    assert (await erp.call(lambda: viewer.service.GetValveState(simulated.ldn))).state == 0
    assert len(await erp.store.commands.recent(simulated.ldn)) == 1


@pytest_twisted.ensureDeferred
async def test_three_ways_to_sign_in_and_every_call_audited(
    backend: Backend,
    sacs: list[Sac],  # noqa: F811
) -> None:
    erp = await erp_sac(backend, sacs, 1)
    ldn = erp.fleet.meters[0].ldn
    nobody = await erp.call(lambda: erp.client(None))
    fault = await erp.fault(lambda: nobody.service.GetMeter(ldn))
    assert fault[0] == "Client.Authentication" and "UsernameToken" in fault[1]
    wrong = await erp.call(lambda: erp.client("erp", "not the password"))
    fault = await erp.fault(lambda: wrong.service.GetMeter(ldn))
    assert fault == ("Client.Authentication", "wrong user name or password")
    # who the caller is comes before what they asked: no hint about inputs to a stranger
    t = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    fault = await erp.fault(lambda: nobody.service.ExportIndexReadings(t, t, None, 0))
    assert fault[0] == "Client.Authentication"
    # WS-Security UsernameToken in the SOAP header, no HTTP credentials
    wsse = await erp.call(lambda: erp.client(None, wsse=UsernameToken("auditor", PASSWORD)))
    assert (await erp.call(lambda: wsse.service.GetMeter(ldn))).ldn == ldn
    bad_wsse = await erp.call(lambda: erp.client(None, wsse=UsernameToken("auditor", "nope")))
    assert (await erp.fault(lambda: bad_wsse.service.GetMeter(ldn)))[0] == "Client.Authentication"
    # an API token as a bearer
    secret, token = await erp.store.tokens.create("auditor", "billing", Actor("test"))

    def bearer(value: str) -> Any:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {value}"
        return zeep.Client(erp.wsdl, transport=Transport(session=session))

    tokened = await erp.call(lambda: bearer(secret))
    assert (await erp.call(lambda: tokened.service.GetMeter(ldn))).ldn == ldn
    await erp.store.tokens.revoke(token.id)
    fault = await erp.fault(lambda: tokened.service.GetMeter(ldn))
    assert fault[0] == "Client.Authentication"
    viewer = await erp.call(lambda: erp.client("auditor"))
    await erp.fault(lambda: viewer.service.RequestValve(ldn, "close"))
    await erp.fault(lambda: viewer.service.ExportIndexReadings(t, t))
    audit = [(e.actor, e.action, e.target) for e in await erp.store.audit.log(50)]
    assert audit.count(("auditor", "soap GetMeter", ldn)) == 2
    refused = [
        (e.action, e.detail) for e in await erp.store.audit.log(50) if "refused" in (e.detail or "")
    ]
    assert refused[:2] == [
        ("soap ExportIndexReadings", "refused: Client.BadRange the range ends before it starts"),
        ("soap RequestValve", "refused: Client.Forbidden this operation needs the operator role"),
    ]
    assert ("auditor", "sign-in failed", None) in audit or any(
        a[1] == "sign-in failed" for a in audit
    )


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_a_billing_export_of_100k_readings_resumes_from_its_cursor(
    backend: Backend,
    sacs: list[Sac],  # noqa: F811
) -> None:
    """100,000 readings on PostgreSQL (the production store); 10,000 on SQLite, to keep the
    suite short: the paging is the same SQL."""
    total = 100_000 if backend.kind == "postgresql" else 10_000
    erp = await erp_sac(backend, sacs, 100, pushing=2)
    t0 = dt.datetime(2026, 9, 1, tzinfo=dt.UTC)
    hours = total // 100
    batch = []
    for m in erp.fleet.meters:
        for h in range(hours):
            at = t0 + dt.timedelta(hours=h)
            batch.append(Reading(m.ldn, INDEX, 2, 10_000 * h, at, "poll", at, -3, 14))
    for i in range(0, len(batch), 20_000):
        await erp.store.readings.add(batch[i : i + 20_000])
    end = t0 + dt.timedelta(hours=hours)
    size = total // 10

    def export(pages: int | None, cursor: str | None) -> tuple[list[tuple[str, Any]], Any]:
        client = erp.client("auditor")  # a new connection, as after a crash
        got: list[tuple[str, Any]] = []
        while pages is None or pages > 0:
            page = client.service.ExportIndexReadings(t0, end, cursor, size)
            got += [(r.ldn, r.captured) for r in page.readings.ReadingInfo]
            cursor = page.cursor
            if cursor is None:
                break
            if pages is not None:
                pages -= 1
        return got, cursor

    first, cursor = await erp.call(lambda: export(3, None))
    assert len(first) == 3 * size and cursor is not None
    rest, last = await erp.call(lambda: export(None, cursor))
    assert last is None
    everything = first + rest
    assert len(everything) == total == len(set(everything))  # each reading exactly once
    assert everything == sorted(everything)  # per meter, then in time
    resumed = [e for e in await erp.store.audit.log(20) if e.action == "soap ExportIndexReadings"]
    assert sum((e.detail or "").endswith("resumed") for e in resumed) >= 7


@pytest_twisted.ensureDeferred
async def test_the_index_export_takes_each_meters_index_from_its_profile(
    backend: Backend,
) -> None:
    """A profile may keep the converted-volume index in another object than the generic
    catalogue's: the billing export gives each meter's own index, and not the object that
    is the index of other meters."""
    elsewhere = Obis("7.0.13.0.0.255")
    odd = MeterProfile(
        name="odd-index",
        description="its index in another object",
        objects={**STANDARD_OBJECTS, "converted_volume_index": CosemRef(3, elsewhere, 2)},
    )
    registry = ProfileRegistry([*REGISTRY.profiles.values(), odd], REGISTRY.default)
    store = backend.make()
    await store.open()
    await store.users.add("erp", PASSWORD, Role.VIEWER)
    plain, other = "SAC0000000000001", "SAC0000000000002"
    await store.meters.add(NewMeter(plain, profile="uni-ts-11291-12-2"))
    await store.meters.add(NewMeter(other, profile="odd-index"))
    t0 = dt.datetime(2026, 9, 1, tzinfo=dt.UTC)
    await store.readings.add(
        [
            Reading(ldn, obis, 2, 1000 * h + n, at, "poll", at, -3, 14)
            for n, ldn in enumerate((plain, other))
            for obis in (INDEX, elsewhere)
            for h in range(3)
            for at in [t0 + dt.timedelta(hours=h)]
        ]
    )
    web = Web(store, registry, settings=WebSettings(secure_cookies=False))
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(web.resource()))
    wsdl = f"http://127.0.0.1:{port.getHost().port}/soap?wsdl"

    def export(size: int) -> list[tuple[str, str, Any]]:
        session = requests.Session()
        session.auth = ("erp", PASSWORD)
        client = zeep.Client(wsdl, transport=Transport(session=session, timeout=30))
        got, cursor = [], None
        while True:  # in pages of ``size``: the cursor carries the per-profile choice
            page = client.service.ExportIndexReadings(t0, t0 + dt.timedelta(days=1), cursor, size)
            got += [(r.ldn, r.obis, r.captured) for r in page.readings.ReadingInfo]
            if (cursor := page.cursor) is None:
                return got

    try:
        for size in (1000, 2):
            got = await threads.deferToThread(export, size)
            assert [(ldn, obis) for ldn, obis, _ in got] == [(plain, str(INDEX))] * 3 + [
                (other, str(elsewhere))
            ] * 3
    finally:
        await port.stopListening()


def test_a_bad_cursor_is_told_by_its_class_not_by_its_words() -> None:
    """The fault of a cursor the store refuses is Client.BadCursor whatever its message
    says; another refused value is Client.BadInput even when its message names a cursor."""
    assert soap_fault(BadCursor("damaged beyond reading")) == (
        "Client.BadCursor",
        "damaged beyond reading",
    )
    assert soap_fault(InvalidRequest("the cursor field is 40 characters at most")) == (
        "Client.BadInput",
        "the cursor field is 40 characters at most",
    )


@pytest_twisted.ensureDeferred
async def test_a_meters_connections_as_its_pushes_left_them(
    backend: Backend,
    sacs: list[Sac],  # noqa: F811
) -> None:
    before = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    erp = await erp_sac(backend, sacs, 2, pushing=1)
    await erp.sac.connections.flush()
    pushed, silent = erp.fleet.meters
    client = await erp.call(erp.client)
    after = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    page = await erp.call(lambda: client.service.GetConnections(pushed.ldn, before, after))
    [c] = page.connections.ConnectionInfo
    assert (c.kind, c.peer, c.outcome, c.detail) == ("push", "127.0.0.1", "stored", None)
    assert before <= c.started <= after and c.durationMs >= 0 and page.cursor is None
    none = await erp.call(lambda: client.service.GetConnections(silent.ldn, before, after))
    assert not none.connections
    for args, code in (
        (("FIO9999999999999", before, after), "Client.UnknownMeter"),
        ((pushed.ldn, after, before), "Client.BadRange"),
        ((pushed.ldn, before, after, "garbage"), "Client.BadCursor"),
        ((pushed.ldn, before, after, None, 0), "Client.PageTooLarge"),
    ):
        fault = await erp.fault(lambda a=args: client.service.GetConnections(*a))
        assert fault[0] == code, (args, fault)
