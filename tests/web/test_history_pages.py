"""The meter page's history of each object (issue 21): charts for the numbers, tables of
changes for the others, the daily diagnostic with its bits named, and the consumption per
gas day with its gaps."""

from __future__ import annotations

import datetime as dt
import re

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from sac import gasday
from sac.dlms import Obis
from sac.store import Ingest, MeterStatus, NewMeter, Reading
from tests.web.conftest import Backend, Site, make_site

LDN = "ELS0000000000042"
INDEX = Obis("7.0.13.2.0.255")
ALARM_INDEX = Obis("7.0.12.2.0.255")
BATTERY = Obis("0.0.96.6.6.255")
DIAGNOSTIC = Obis("7.0.96.5.1.255")
DAILY_DIAGNOSTIC = Obis("7.1.96.5.1.255")
VALVE = Obis("0.0.96.3.10.255")
PDR = Obis("0.0.96.1.10.255")
LDN_OBJECT = Obis("0.0.42.0.0.255")


def octets(text: str) -> bytes:
    return bytes([0x09, len(text)]) + text.encode()


def history(now: dt.datetime) -> tuple[list[Reading], list[dt.date]]:
    """Ten gas days closed by the daily capture at 06:00 Rome, the 4th missing; and each
    other object's readings along them.  The closed days, oldest first."""
    today = gasday.gas_day_of(now)
    closes = [today - dt.timedelta(days=d) for d in range(10, 0, -1)]
    out = []
    for k, day in enumerate(closes):
        t = gasday.bounds(day)[1]  # 06:00 after the day: closes it
        if k != 3:
            out.append(Reading(LDN, INDEX, 2, 5_000_000 + 1250 * k, t, "cf48", t, -3, 14))
        out.append(Reading(LDN, DAILY_DIAGNOSTIC, 2, 0x100 if k >= 8 else 0, t, "cf48", t))
        out.append(Reading(LDN, BATTERY, 2, 3600 - k, t, "poll", t, 0, 4))
        out.append(Reading(LDN, ALARM_INDEX, 2, 10 * k, t, "cf48", t, -3, 14))
        out.append(Reading(LDN, DIAGNOSTIC, 2, [0, 0, 0x21, 0x21, 0][min(k, 4)], t, "cf48", t))
        out.append(Reading(LDN, VALVE, 3, 1 if k < 6 else 0, t, "cf48", t))
        out.append(
            Reading(
                LDN,
                PDR,
                2,
                None,
                t,
                "poll",
                t,
                raw=octets("12345678901234" if k < 5 else "12345678909999"),
            )
        )
        out.append(Reading(LDN, LDN_OBJECT, 2, None, t, "poll", t, raw=octets(LDN)))
    return out, closes


@pytest.fixture
def site(backend: Backend) -> Site:
    return pytest_twisted.blockon(Deferred.fromCoroutine(make_site(backend)))


def cells(row: str) -> list[str]:
    return re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)


def section(page: str, ident: str) -> str:
    start = page.index(f'id="{ident}"')
    return page[start : page.index("</section>", start)]


@pytest_twisted.ensureDeferred
async def test_the_page_shows_each_objects_history(site: Site) -> None:
    await site.store.meters.add(NewMeter(LDN, pdr="12345678909999", profile="honeywell-ei7"))
    now = dt.datetime.now(dt.UTC)
    readings, closes = history(now)
    last = readings[-1].received
    await site.store.readings.ingest(
        Ingest(
            readings=readings,
            statuses=[MeterStatus(LDN, connected=last, at=last, diagnostic=0, valve_state=0)],
        )
    )
    viewer = await site.signed_in("vera")
    code, _, page = await viewer.get(f"/meters/{LDN}?range=30d")
    assert code == 200

    # consumption per gas day: 1.250 Sm³ a day, the missing day and the one after are gaps
    chart = page[page.index('id="daily-chart"') :]
    chart = chart[: chart.index("</figure>")]
    assert chart.count('<rect class="bar"') == 7 and chart.count('<rect class="gap"') == 2
    assert '<rect class="gap" x=' in chart and f'data-day="{closes[3]}"' in chart
    days = section(page, "gas-days")
    rows = dict(
        re.findall(
            r'<tr data-gas-day="([0-9-]+)"><td>[0-9-]+</td><td class="num[^"]*">([^<]+)<', days
        )
    )
    assert rows[str(closes[3])] == rows[str(closes[4])] == "no reading: a gap"
    assert rows[str(closes[2])] == rows[str(closes[9])] == "1.250"
    assert str(closes[0]) not in rows  # before the first consumption: not a gap

    objects = section(page, "objects")
    # charts of the numbers: the index under alarm and the battery's autonomy
    for name in ("converted_volume_index_under_alarm", "battery_autonomy"):
        figure = objects[objects.index(f'id="chart-{name}"') :]
        assert figure.index("<polyline") < figure.index("</figure>"), name
    assert 'aria-label="Battery autonomy of ELS0000000000042"' in objects

    def table(name: str) -> list[list[str]]:
        part = objects[objects.index(f'id="changes-{name}"') :]
        part = part[: part.index("</table>")]
        return [
            [" ".join(re.sub(r"<[^>]+>", " ", cell).split()) for cell in cells(row)]
            for row in re.findall(r"<tr>(.*?)</tr>", part, re.S)
            if cells(row)
        ]

    pdr = table("pdr")
    assert [r[0] for r in pdr] == ["12345678909999", "12345678901234"]  # newest first
    assert pdr[0][3] == "poll" and pdr[0][1] == pdr[0][2]  # captured, received shown
    assert [r[0] for r in table("ldn")] == [LDN]
    assert [r[0] for r in table("valve")] == ["closed", "open"]
    diagnostic = [r[0] for r in table("current_diagnostic")]
    assert diagnostic == ["OK", "0x0021 unknown bit 0 overflow", "OK"]

    daily = section(page, "daily-diagnostic")
    assert daily.count("<tr>") == 1 + 10  # its head, and one row a gas day
    first_row = re.findall(r"<tr>(.*?)</tr>", daily, re.S)[1]
    assert f"<td>{closes[9]}</td>" in first_row and "battery low" in first_row
    assert "0x0100" in first_row and 'class="wrap alarm"' in first_row


@pytest_twisted.ensureDeferred
async def test_a_meter_without_history_says_so(site: Site) -> None:
    await site.store.meters.add(NewMeter(LDN))
    viewer = await site.signed_in("vera")
    code, _, page = await viewer.get(f"/meters/{LDN}")
    assert code == 200
    assert 'id="gas-days"' not in page and "<svg" not in page
    assert "Battery autonomy: no reading in the last 30d." in page
    assert section(page, "objects").count("No reading in the last 30d.") == 4
    assert "No daily diagnostic received." in section(page, "daily-diagnostic")
