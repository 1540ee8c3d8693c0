"""SOAP's alarms as an ERP uses them (zeep, the WSDL the SAC serves on a real port): the open
alarms by category and meter, an alarm acknowledged by an operator with a note, and the
faults: a viewer may not, an unknown id, twice -- on both stores."""

from __future__ import annotations

import datetime as dt

import pytest_twisted
import requests

from sac.dlms import Obis
from sac.store import Event, Ingest
from tests.acquisition.conftest import Sac, sacs  # noqa: F401 -- fixtures
from tests.store.conftest import Backend
from tests.web.test_soap import erp_sac

LOGBOOK = Obis("7.0.99.98.1.255")


@pytest_twisted.ensureDeferred
async def test_open_alarms_acknowledged_through_soap(
    backend: Backend,
    sacs: list[Sac],  # noqa: F811
) -> None:
    erp = await erp_sac(backend, sacs, 2, pushing=0)
    first, second = (m.ldn for m in erp.fleet.meters)
    t0 = dt.datetime(2026, 11, 21, 8, tzinfo=dt.UTC)
    events = [
        Event(first, LOGBOOK, 80, t0, t0, "poll"),  # tampering begins
        Event(second, LOGBOOK, 102, t0 + dt.timedelta(minutes=1), t0, "poll"),
        Event(second, LOGBOOK, 12, t0 + dt.timedelta(minutes=2), t0, "poll"),  # info
    ]
    await erp.store.readings.ingest(Ingest(events=events))
    text = await erp.call(lambda: requests.get(erp.wsdl, timeout=10).text)
    for fault in ("UnknownAlarmFault", "AlreadyAcknowledgedFault"):
        assert f'name="{fault}"' in text
    viewer = await erp.call(lambda: erp.client("auditor"))
    page = await erp.call(lambda: viewer.service.GetOpenAlarms())
    alarms = page.alarms.EventInfo
    assert [(a.ldn, a.code, a.category, a.severity, a.open) for a in alarms] == [
        (second, 102, "valve", "alarm", True),
        (first, 80, "tamper", "alarm", True),
    ]
    assert page.cursor is None and alarms[1].name_it == "inizio manomissione"
    tamper = alarms[1].id
    only = await erp.call(lambda: viewer.service.GetOpenAlarms("tamper"))
    assert [a.id for a in only.alarms.EventInfo] == [tamper]
    mine = await erp.call(lambda: viewer.service.GetOpenAlarms(None, second, None, 1))
    assert [a.code for a in mine.alarms.EventInfo] == [102] and mine.cursor is None
    fault = await erp.fault(lambda: viewer.service.AcknowledgeAlarm(tamper, "no"))
    assert fault[0] == "Client.Forbidden"
    operator = await erp.call(erp.client)
    done = await erp.call(lambda: operator.service.AcknowledgeAlarm(tamper, "seal checked"))
    assert (done.open, done.acknowledgedBy, done.note) == (False, "erp", "seal checked")
    assert done.acknowledged.utcoffset() == dt.timedelta(0)
    fault = await erp.fault(lambda: operator.service.AcknowledgeAlarm(tamper, None))
    assert fault[0] == "Client.AlreadyAcknowledged" and "acknowledged by erp" in fault[1]
    fault = await erp.fault(lambda: operator.service.AcknowledgeAlarm(999_999, None))
    assert fault == ("Client.UnknownAlarm", "no alarm 999999")
    fault = await erp.fault(lambda: operator.service.AcknowledgeAlarm(tamper + 1, "x" * 1001))
    assert fault[0] == "Client.BadInput"
    for bad, code in (
        (("weather",), "Client.BadInput"),
        ((None, "FIO9999999999999"), "Client.UnknownMeter"),
        ((None, None, "garbage"), "Client.BadCursor"),
        ((None, None, None, 0), "Client.PageTooLarge"),
    ):
        fault = await erp.fault(lambda bad=bad: viewer.service.GetOpenAlarms(*bad))
        assert fault[0] == code, (bad, fault)
    left = await erp.call(lambda: viewer.service.GetOpenAlarms())
    assert [a.code for a in left.alarms.EventInfo] == [102]
    # GetEvents says who acknowledged what
    every = await erp.call(lambda: viewer.service.GetEvents(t0, t0 + dt.timedelta(hours=1), first))
    (event,) = every.events.EventInfo
    assert (event.id, event.acknowledgedBy, event.note) == (tamper, "erp", "seal checked")
    trail = [(e.actor, e.action, e.target, e.detail) for e in await erp.store.audit.log(50)]
    assert ("erp", "acknowledge alarm", first, f"alarm {tamper}: seal checked") in trail
    assert ("erp", "soap AcknowledgeAlarm", str(tamper), "seal checked") in trail
