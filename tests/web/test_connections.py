"""A meter's connections on its page ("Recent connections") and through the JSON API
(GET /api/v1/meters/{ldn}/connections: a time range, in pages), on both stores."""

from __future__ import annotations

import datetime as dt
import html

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from sac.store import Connection, NewMeter
from tests.web.conftest import Backend, Site, make_site
from tests.web.test_api import Api

LDN = "FIO0000000000001"
T0 = dt.datetime(2025, 11, 20, 6, 0, tzinfo=dt.UTC)


@pytest.fixture
def site(backend: Backend) -> Site:
    return pytest_twisted.blockon(Deferred.fromCoroutine(make_site(backend)))


async def seeded(site: Site) -> None:
    await site.store.meters.add(NewMeter(LDN))
    await site.store.connections.add(
        [
            Connection(LDN, T0 + dt.timedelta(hours=h), "192.0.2.7", "push", "stored", 40 + h)
            for h in range(5)
        ]
        + [
            Connection(
                LDN,
                T0 + dt.timedelta(hours=5),
                "10.0.0.9:4059",
                "poll",
                "partial",
                2300,
                ("daily_profile",),
                ("event_logbook: object-undefined <b>",),
            ),
            Connection(
                LDN,
                T0 + dt.timedelta(hours=6),
                "198.51.100.3",
                "push",
                "ip-not-allowed",
                3,
                detail=f"meter {LDN} may not call from 198.51.100.3",
            ),
        ]
    )


@pytest_twisted.ensureDeferred
async def test_the_meter_page_shows_its_recent_connections(site: Site) -> None:
    await seeded(site)
    viewer = await site.signed_in("vera")
    code, _, page = await viewer.get(f"/meters/{LDN}")
    assert code == 200
    section = page[page.index('id="connections"') :]
    assert "Recent connections" in section
    rows = section.split("<tr>")[2:]
    assert len(rows) == 7 and "ip-not-allowed" in rows[0] and "198.51.100.3" in rows[0]
    assert "may not call from" in rows[0]
    assert "partial" in rows[1] and "daily_profile" in rows[1] and "not read:" in rows[1]
    assert "&lt;b&gt;" in rows[1]  # what a meter said is escaped
    await site.store.meters.add(NewMeter("FIO0000000000002"))
    code, _, page = await viewer.get("/meters/FIO0000000000002")
    assert "No connection recorded." in html.unescape(page)


@pytest_twisted.ensureDeferred
async def test_the_api_pages_a_meters_connections_by_time(site: Site) -> None:
    await seeded(site)
    secret, _ = await site.store.tokens.create("vera", "vera-ci")
    api = Api(site, secret)
    path = f"/api/v1/meters/{LDN}/connections"
    window = "from=2025-11-20T07:00:00%2B01:00&to=2025-11-20T13:00:00Z"
    code, _, body = await api.call("GET", f"{path}?{window}&limit=4")
    assert code == 200, body
    assert [c["started"] for c in body["connections"]] == [
        (T0 + dt.timedelta(hours=h)).isoformat() for h in range(4)
    ]
    assert body["connections"][0] == {
        "started": "2025-11-20T06:00:00+00:00",
        "peer": "192.0.2.7",
        "kind": "push",
        "outcome": "stored",
        "duration_ms": 40,
        "read": [],
        "skipped": [],
        "detail": None,
    }
    code, _, more = await api.call("GET", f"{path}?{window}&limit=4&after={body['next']}")
    assert code == 200 and more["next"] is None
    [poll, refused] = more["connections"][1:]
    assert poll["kind"] == "poll" and poll["read"] == ["daily_profile"]
    assert poll["skipped"] == ["event_logbook: object-undefined <b>"]
    assert refused["outcome"] == "ip-not-allowed" and "may not call" in refused["detail"]
    # the default range: the last 30 days, which these are not in
    code, _, recent = await api.call("GET", path)
    assert code == 200 and recent == {"connections": [], "next": None}
    for query, words in (
        ("from=yesterday", "from is an ISO-8601 time"),
        ("to=2025-11-20T12:00:00", "to is an ISO-8601 time"),
        ("from=2025-11-21T00:00:00Z&to=2025-11-20T00:00:00Z", "ends before it starts"),
        (f"{window}&after=garbage", "after is not a cursor"),
        (f"from=2025-11-19T00:00:00Z&to=2025-11-21T00:00:00Z&after={body['next']}", "cursor"),
        ("limit=0", "limit is a whole number"),
        ("since=2025-11-20T00:00:00Z", "unknown query parameter"),
    ):
        code, _, error = await api.call("GET", f"{path}?{query}")
        assert code == 400 and words in error["error"]["message"], (query, error)
    code, _, error = await api.call("GET", "/api/v1/meters/FIO9999999999999/connections")
    assert code == 404 and error["error"]["code"] == "not_found"
