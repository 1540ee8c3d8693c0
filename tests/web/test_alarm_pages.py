"""The alarms page and the meter page's alarms: viewers see the open alarms by category,
operators acknowledge them with a note (CSRF-guarded, audited), an acknowledged alarm says
who, when and what; the meter list's "with alarms" follows."""

from __future__ import annotations

import re

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from sac.dlms import Obis
from sac.store import Event, Ingest
from tests.web.conftest import Backend, Site, make_site
from tests.web.test_pages import ldn, ldns_in, seed

LOGBOOK = Obis("7.0.99.98.1.255")


@pytest.fixture
def site(backend: Backend) -> Site:
    return pytest_twisted.blockon(Deferred.fromCoroutine(make_site(backend)))


async def with_alarms(site: Site) -> dict[int, int]:
    """The seeded meters; meter 0 with a tamper alarm (80) and a billing close (info),
    meter 1 with a valve alarm (102) and a battery alarm (94).  {code: alarm id}."""
    now = await seed(site)
    events = [
        Event(ldn(0), LOGBOOK, 80, now.replace(microsecond=0), now, "poll"),
        Event(ldn(0), LOGBOOK, 90, now.replace(microsecond=1), now, "poll"),
        Event(ldn(1), LOGBOOK, 102, now.replace(microsecond=2), now, "poll"),
        Event(ldn(1), LOGBOOK, 94, now.replace(microsecond=3), now, "poll"),
    ]
    await site.store.readings.ingest(Ingest(events=events))
    return {e.code: e.id for e in (await site.store.events.open_alarms()).alarms}


@pytest_twisted.ensureDeferred
async def test_viewers_see_the_open_alarms_by_category(site: Site) -> None:
    ids = await with_alarms(site)
    viewer = await site.signed_in("vera")
    code, _, page = await viewer.get("/alarms")
    assert code == 200 and 'href="/alarms"' in page  # the nav link
    assert "3 open" in page
    assert re.findall(r'data-alarm="(\d+)"', page) == [str(ids[c]) for c in (94, 102, 80)]
    assert "tampering begins" in page and "valve closed on a leak" in page
    assert '<span class="severity alarm">alarm</span>' in page
    assert "billing period closed" not in page  # info: no alarm
    assert 'action="/alarms/' not in page  # a viewer has no form to acknowledge
    assert "tamper <small>1 on 1 meter</small>" in page
    code, _, page = await viewer.get("/alarms?category=valve")
    assert re.findall(r'data-alarm="(\d+)"', page) == [str(ids[102])]
    code, _, _ = await viewer.get("/alarms?category=weather")
    assert code == 400
    # the list's "with alarms": meters 0 and 1 (open alarms), 3 (its diagnostic)
    code, _, page = await viewer.get("/meters?alarms=1")
    assert ldns_in(page) == [ldn(0), ldn(1), ldn(3)]
    assert f'href="/alarms?ldn={ldn(1)}">2 alarms</a>' in page  # its diagnostic is OK
    assert f'href="/alarms?ldn={ldn(0)}">1 alarm</a>' in page
    code, _, page = await viewer.get(f"/alarms?ldn={ldn(1)}")
    assert re.findall(r'data-alarm="(\d+)"', page) == [str(ids[94]), str(ids[102])]
    # a viewer may not acknowledge
    code, _, _ = await viewer.post(f"/alarms/{ids[80]}/acknowledge", {"note": "no"})
    assert code == 403
    assert len((await site.store.events.open_alarms()).alarms) == 3


@pytest_twisted.ensureDeferred
async def test_an_operator_acknowledges_with_a_note(site: Site) -> None:
    ids = await with_alarms(site)
    operator = await site.signed_in("otto")
    code, _, page = await operator.get("/alarms")
    assert page.count('name="note"') == 3
    code, heads, _ = await operator.post(
        f"/alarms/{ids[80]}/acknowledge", {"note": "sealed again", "next": "/alarms"}
    )
    assert code == 303 and heads["location"] == "/alarms?acknowledged=1"
    code, _, page = await operator.get(heads["location"])
    assert "1 alarm acknowledged." in page and "2 open" in page
    assert f'data-alarm="{ids[80]}"' not in page
    # the meter page: who, when, what; the meter leaves the list's "with alarms"
    code, _, page = await operator.get(f"/meters/{ldn(0)}")
    assert "acknowledged by otto at" in page and "<q>sealed again</q>" in page
    code, _, page = await operator.get("/meters?alarms=1")
    assert ldns_in(page) == [ldn(1), ldn(3)]
    # twice: a conflict that says who did it
    code, _, page = await operator.post(f"/alarms/{ids[80]}/acknowledge", {})
    assert code == 409 and "acknowledged by otto" in page
    code, _, _ = await operator.post("/alarms/99999999/acknowledge", {})
    assert code == 404
    code, _, page = await operator.post(f"/alarms/{ids[102]}/acknowledge", {"note": "x" * 1001})
    assert code == 400 and "at most 1000 characters" in page
    # off-site next: back to the alarms, not elsewhere
    code, heads, _ = await operator.post(
        f"/alarms/{ids[102]}/acknowledge", {"next": "//evil.example/"}
    )
    assert heads["location"] == "/meters?acknowledged=1"
    trail = await site.store.audit.log()
    acks = [(a.actor, a.target, a.detail) for a in trail if a.action == "acknowledge alarm"]
    assert acks == [
        ("otto", ldn(1), f"alarm {ids[102]}"),
        ("otto", ldn(0), f"alarm {ids[80]}: sealed again"),
    ]


@pytest_twisted.ensureDeferred
async def test_the_meter_page_acknowledges_one_or_all(site: Site) -> None:
    ids = await with_alarms(site)
    operator = await site.signed_in("otto")
    code, _, page = await operator.get(f"/meters/{ldn(1)}")
    events = page[page.index('id="events"') :]
    assert events.count('<button type="submit">Acknowledge</button>') == 2
    assert "Acknowledge all 2 open alarms" in events
    code, heads, _ = await operator.post(
        f"/alarms/meters/{ldn(1)}/acknowledge",
        {"confirm": ldn(1), "note": "battery replaced", "next": f"/meters/{ldn(1)}#events"},
    )
    assert code == 303 and heads["location"] == f"/meters/{ldn(1)}?acknowledged=2#events"
    code, _, page = await operator.get(f"/meters/{ldn(1)}")
    assert page.count("acknowledged by otto") == 2 and "Acknowledge all" not in page
    code, _, _ = await operator.post(f"/alarms/meters/{ldn(0)}/acknowledge", {"confirm": "x"})
    assert code == 400  # the confirmation names another meter
    assert [e.id for e in (await site.store.events.open_alarms()).alarms] == [ids[80]]
    # a viewer sees the open alarm, no form
    viewer = await site.signed_in("vera")
    code, _, page = await viewer.get(f"/meters/{ldn(0)}")
    assert '<span class="open-alarm">open</span>' in page and 'name="note"' not in page
