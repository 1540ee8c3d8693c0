"""The JSON API's events and alarms: a meter's events in words over a time range, in pages;
the open alarms by category; an alarm acknowledged by an operator's token, with a note,
audited; refusals as the rest of the API answers them."""

from __future__ import annotations

import datetime as dt

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from sac.dlms import Obis
from sac.store import Event, Ingest, NewMeter
from tests.web.conftest import Backend, make_site
from tests.web.test_api import Tokens
from tests.web.test_api import ldn as api_ldn

LOGBOOK = Obis("7.0.99.98.1.255")
T0 = dt.datetime(2026, 11, 21, 8, 0, tzinfo=dt.UTC)


@pytest.fixture
def tokens(backend: Backend) -> Tokens:
    """A site, and a token for each of its users."""

    async def make() -> Tokens:
        site = await make_site(backend)
        secrets, ids = {}, {}
        for user in ("vera", "otto", "ada"):
            secret, token = await site.store.tokens.create(user, f"{user}-ci")
            secrets[user], ids[user] = secret, token.id
        return Tokens(site, secrets, ids)

    return pytest_twisted.blockon(Deferred.fromCoroutine(make()))


async def seed(tokens: Tokens) -> None:
    store = tokens.site.store
    for i in range(2):
        await store.meters.add(NewMeter(api_ldn(i)))
    events = [
        Event(api_ldn(0), LOGBOOK, 80, T0, T0, "poll", 1),  # tampering begins: an alarm
        Event(api_ldn(0), LOGBOOK, 12, T0 + dt.timedelta(minutes=1), T0, "poll", 2),
        Event(api_ldn(0), LOGBOOK, 77, T0 + dt.timedelta(minutes=2), T0, "poll", 3),
        Event(api_ldn(1), LOGBOOK, 94, T0 + dt.timedelta(minutes=3), T0, "poll", 4),
    ]
    await store.readings.ingest(Ingest(events=events))


@pytest_twisted.ensureDeferred
async def test_a_meters_events_in_words_in_pages(tokens: Tokens) -> None:
    await seed(tokens)
    vera = tokens.client("vera")
    code, _, body = await vera.call("GET", f"/api/v1/meters/{api_ldn(0)}/events?limit=2")
    assert code == 200 and len(body["events"]) == 2 and body["cursor"]
    tamper, clock = body["events"]
    assert tamper["name_en"] == "tampering begins" and tamper["name_it"] == "inizio manomissione"
    assert (tamper["category"], tamper["severity"], tamper["open"]) == ("tamper", "alarm", True)
    assert tamper["acknowledged"] is None and tamper["occurred"] == T0.isoformat()
    assert (clock["category"], clock["severity"], clock["open"]) == ("clock", "info", False)
    code, _, more = await vera.call(
        "GET", f"/api/v1/meters/{api_ldn(0)}/events?limit=2&cursor={body['cursor']}"
    )
    assert [e["name_en"] for e in more["events"]] == ["unknown (code 77)"]
    assert more["cursor"] is None
    window = "start=2026-11-21T09:00:30%2B01:00&end=2026-11-21T08:02:00Z"
    code, _, body = await vera.call("GET", f"/api/v1/meters/{api_ldn(0)}/events?{window}")
    assert [e["code"] for e in body["events"]] == [12]
    for bad in ("start=yesterday", "end=2026-11-21T08:00:00", "limit=0", "colour=red"):
        code, _, body = await vera.call("GET", f"/api/v1/meters/{api_ldn(0)}/events?{bad}")
        assert code == 400 and body["error"]["code"] == "bad_parameter", bad
    code, _, body = await vera.call("GET", "/api/v1/meters/NOSUCHMETER00000/events")
    assert code == 404 and body["error"]["code"] == "not_found"


@pytest_twisted.ensureDeferred
async def test_open_alarms_and_an_acknowledgement(tokens: Tokens) -> None:
    await seed(tokens)
    vera, otto = tokens.client("vera"), tokens.client("otto")
    code, _, body = await vera.call("GET", "/api/v1/alarms")
    assert code == 200 and [e["code"] for e in body["events"]] == [94, 80]
    code, _, body = await vera.call("GET", "/api/v1/alarms?category=tamper")
    (tamper,) = body["events"]
    code, _, body = await vera.call("GET", "/api/v1/alarms?category=weather")
    assert code == 400
    # a viewer may not acknowledge
    code, _, body = await vera.call("POST", f"/api/v1/alarms/{tamper['id']}/acknowledge", {})
    assert code == 403
    code, _, body = await otto.call(
        "POST", f"/api/v1/alarms/{tamper['id']}/acknowledge", {"note": "seal checked"}
    )
    assert code == 200 and body["open"] is False
    ack = body["acknowledged"]
    assert ack["by"].startswith("otto (API token #") and ack["note"] == "seal checked"
    code, _, body = await vera.call("GET", "/api/v1/alarms")
    assert [e["code"] for e in body["events"]] == [94]
    code, _, body = await vera.call("GET", f"/api/v1/meters/{api_ldn(0)}/events")
    assert body["events"][0]["acknowledged"]["note"] == "seal checked"
    # twice: a conflict that names who; an unknown id; a note that is not a short string
    code, _, body = await otto.call("POST", f"/api/v1/alarms/{tamper['id']}/acknowledge")
    assert code == 409 and "acknowledged by otto" in body["error"]["message"]
    code, _, body = await otto.call("POST", "/api/v1/alarms/999999/acknowledge", {})
    assert code == 404 and body["error"]["message"] == "no alarm 999999"
    for bad in ({"note": 5}, {"note": "x" * 1001}, {"colour": "red"}):
        code, _, body = await otto.call("POST", "/api/v1/alarms/999999/acknowledge", bad)
        assert code == 422 and body["error"]["code"] == "invalid", bad
    code, _, _ = await otto.call(
        "POST", "/api/v1/alarms/999999/acknowledge", raw=b"{", content_type="text/plain"
    )
    assert code == 415
    trail = await tokens.site.store.audit.log()
    assert [(a.action, a.target, a.detail) for a in trail if a.action.startswith("ack")] == [
        ("acknowledge alarm", api_ldn(0), f"alarm {tamper['id']}: seal checked")
    ]
