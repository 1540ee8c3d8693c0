"""SOAP's history operations as an ERP calls them with zeep (issue 21): consumption per gas
day with its gaps, the index at each gas month's start with its PDR, and the PDR on every
export row."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest_twisted
import requests
import zeep
from twisted.internet import reactor, threads
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.web.server import Site
from zeep.transports import Transport

from sac import gasday
from sac.store import NewMeter, Reading, Role
from sac.web.app import Web, WebSettings
from tests.store.conftest import Backend
from tests.web.conftest import REGISTRY
from tests.web.test_history_pages import INDEX

PASSWORD = "an erp's long password"
PLAIN, SILENT = "SAC0000000000001", "SAC0000000000002"
DAYS = [dt.date(2026, 3, d) for d in range(26, 32)]  # 29 March: 23 hours


@pytest_twisted.ensureDeferred
async def test_daily_consumption_and_the_month_start_export(backend: Backend) -> None:
    store = backend.make()
    await store.open()
    await store.users.add("erp", PASSWORD, Role.VIEWER)
    await store.meters.add(NewMeter(PLAIN, pdr="11111111111111"))
    await store.meters.add(NewMeter(SILENT, pdr="22222222222222"))
    closes = [gasday.bounds(d)[1] for d in DAYS if d != dt.date(2026, 3, 29)]
    await store.readings.add(
        [
            Reading(PLAIN, INDEX, 2, 4000 + 1500 * k, t, "cf48", t, -3, 14)
            for k, t in enumerate(closes)
        ]
    )
    web = Web(store, REGISTRY, settings=WebSettings(secure_cookies=False))
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(web.resource()))
    wsdl = f"http://127.0.0.1:{port.getHost().port}/soap?wsdl"

    def calls() -> dict[str, Any]:
        session = requests.Session()
        session.auth = ("erp", PASSWORD)
        client = zeep.Client(wsdl, transport=Transport(session=session, timeout=30))
        return {
            "daily": client.service.GetDailyConsumption(PLAIN, DAYS[1], DAYS[-1]),
            "april": client.service.ExportMonthStartIndexes(2026, 4, None),
            "export": client.service.ExportIndexReadings(closes[0], closes[-1], None, 1000),
        }

    try:
        got = await threads.deferToThread(calls)
    finally:
        await port.stopListening()
    days = got["daily"].days.GasDayInfo
    assert got["daily"].pdr == "11111111111111"
    assert [(d.day, d.volume.value if d.volume else None) for d in days] == [
        (dt.date(2026, 3, 27), 1.5),
        (dt.date(2026, 3, 28), 1.5),
        (dt.date(2026, 3, 29), None),  # a gap: nothing closed it
        (dt.date(2026, 3, 30), None),  # nor the day before it
        (dt.date(2026, 3, 31), 1.5),
    ]
    short = days[1]  # 28 March 06:00 CET to 29 March 06:00 CEST: 23 hours
    assert short.end - short.start == dt.timedelta(hours=23) and days[0].volume.unitName == "Sm³"
    april = got["april"]
    assert april.monthStart == dt.datetime(2026, 4, 1, 4, tzinfo=dt.UTC)
    rows = {r.pdr: r for r in april.rows.MonthStartInfo}
    assert rows["11111111111111"].index.value.value == 4000 * 0.001 + 1.5 * 4
    assert rows["11111111111111"].index.pdr == "11111111111111"
    assert rows["22222222222222"].index is None and april.cursor is None
    assert {r.pdr for r in got["export"].readings.ReadingInfo} == {"11111111111111"}
