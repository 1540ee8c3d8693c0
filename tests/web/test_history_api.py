"""The JSON API's history routes (issue 21): an object's readings in pages, consumption per
gas day across the daylight-saving changes with its gaps as null, and billing's index at
each gas month's start by PDR."""

from __future__ import annotations

import datetime as dt

import pytest_twisted

from sac import gasday
from sac.store import NewMeter, Reading
from sac.web.openapi import openapi
from tests.web.conftest import Site
from tests.web.test_api import Tokens, site, tokens  # noqa: F401 -- fixtures
from tests.web.test_history_pages import DIAGNOSTIC, INDEX, LDN, PDR, octets

DAYS = [dt.date(2026, 10, d) for d in range(22, 29)]  # 25 October: 25 hours


async def seed(site: Site) -> None:  # noqa: F811
    await site.store.meters.add(NewMeter(LDN, pdr="12345678901234", profile="honeywell-ei7"))
    readings = [
        Reading(LDN, INDEX, 2, 1_000_000 + 2_500 * k, t, "cf48", t, -3, 14)
        for k, day in enumerate(DAYS)
        if day != dt.date(2026, 10, 26)  # the 26th's close is missing: two gaps
        for t in [gasday.bounds(day)[1]]
    ]
    t = gasday.bounds(DAYS[0])[1]
    readings += [Reading(LDN, DIAGNOSTIC, 2, 0x300, t, "cf48", t)]
    readings += [Reading(LDN, PDR, 2, None, t, "poll", t, raw=octets("12345678901234"))]
    await site.store.readings.add(readings)


@pytest_twisted.ensureDeferred
async def test_readings_daily_and_month_start(site: Site, tokens: Tokens) -> None:  # noqa: F811
    await seed(site)
    api = tokens.client("vera")
    code, _, body = await api.call(
        "GET", f"/api/v1/meters/{LDN}/daily?from=2026-10-23&to=2026-10-28"
    )
    assert code == 200 and body["pdr"] == "12345678901234" and body["unit"] == "Sm3"
    days = {d["day"]: d for d in body["days"]}
    assert [d["volume"] for d in body["days"]] == ["2.500", "2.500", "2.500", None, None, "2.500"]
    long_day = days["2026-10-24"]  # 06:00 CEST to 06:00 CET
    assert (long_day["start"], long_day["end"]) == (
        "2026-10-24T04:00:00+00:00",
        "2026-10-25T05:00:00+00:00",
    )
    assert days["2026-10-26"]["until"] is None and days["2026-10-27"]["since"] is None

    path = f"/api/v1/meters/{LDN}/readings?object=converted_volume_index"
    span = "&from=2026-10-01T00:00:00Z&to=2026-11-01T00:00:00Z"
    code, _, first = await api.call("GET", path + span + "&limit=4")
    assert code == 200 and len(first["readings"]) == 4 and first["next"]
    assert first["readings"][0]["value"] == "1000.000" and first["readings"][0]["unit"] == "Sm3"
    code, _, rest = await api.call("GET", path + span + f"&limit=4&after={first['next']}")
    assert [r["value"] for r in rest["readings"]] == ["1012.500", "1015.000"] and rest[
        "next"
    ] is None
    code, _, diag = await api.call(
        "GET", path.replace("converted_volume_index", "current_diagnostic") + span
    )
    assert diag["readings"][0]["flags"] == ["battery low", "battery low"]
    code, _, pdr = await api.call("GET", path.replace("converted_volume_index", "pdr") + span)
    assert pdr["readings"][0]["text"] == "12345678901234" and pdr["readings"][0]["value"] is None

    code, _, export = await api.call("GET", "/api/v1/exports/month-start?year=2026&month=10")
    assert code == 200 and export["rows"] == [{"ldn": LDN, "pdr": "12345678901234", "index": None}]
    await site.store.readings.add(
        [
            Reading(
                LDN,
                INDEX,
                2,
                999,
                gasday.month_start(2026, 11),
                "cf48",
                gasday.month_start(2026, 11),
                -3,
                14,
            )
        ]
    )
    code, _, export = await api.call(
        "GET", "/api/v1/exports/month-start?year=2026&month=11&pdrs=12345678901234"
    )
    assert export["month_start"] == "2026-11-01T05:00:00+00:00"
    assert export["rows"][0]["index"]["value"] == "0.999"

    for bad in (
        f"/api/v1/meters/{LDN}/readings?object=nothing",
        f"/api/v1/meters/{LDN}/readings?object=pdr&from=2026-10-01",
        f"/api/v1/meters/{LDN}/daily?from=2026-10-28&to=2026-10-01",
        f"/api/v1/meters/{LDN}/daily?from=2020-01-01&to=2026-10-01",
        "/api/v1/exports/month-start?year=2026",
        "/api/v1/exports/month-start?year=2026&month=13",
    ):
        code, _, body = await api.call("GET", bad)
        assert code == 400 and body["error"]["code"] == "bad_parameter", bad
    code, _, body = await api.call("GET", "/api/v1/meters/NOSUCHMETER00000/daily")
    assert code == 404


def test_the_openapi_document_declares_the_history_routes() -> None:
    doc = openapi(["uni-ts-11291-12-2"])
    for path in ("/meters/{ldn}/readings", "/meters/{ldn}/daily", "/exports/month-start"):
        assert "get" in doc["paths"]["/api/v1" + path]
    schemas = doc["components"]["schemas"]
    assert {"ObjectReadings", "DailyConsumption", "GasDay", "MonthStartExport"} <= set(schemas)
    refs = str(doc["paths"])
    assert "#/components/schemas/DailyConsumption" in refs
