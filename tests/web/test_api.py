"""The JSON API (/api/v1) through Klein on both stores: bearer tokens and roles, every route,
bulk changes all or nothing with every refusal by position, bad input as JSON errors, keys
never echoed, the audit trail, and the OpenAPI document against the router."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.logger import globalLogPublisher

from sac.dlms import Obis
from sac.store import Ingest, MeterState, MeterStatus, NewMeter, Reading
from sac.web.api import MAX_BODY, MAX_ITEMS
from sac.web.app import route_rules
from tests.web.conftest import Backend, Site, make_site

INDEX = Obis("7.0.13.2.0.255")
EK = "A1B2C3D4E5F60718293A4B5C6D7E8F90"
AK = "0F1E2D3C4B5A69788796A5B4C3D2E1F0"
EK2 = "C0FFEE00C0FFEE00C0FFEE00C0FFEE01"
SECRETS = (EK, AK, EK2)
JSON = "application/json"


def ldn(i: int) -> str:
    return f"API{i:013d}"


def title(i: int) -> str:
    return f"2F1900000000{i:04X}"


class Api:
    """A machine client: a bearer token, no cookies; every answer body kept."""

    def __init__(self, site: Site, token: str | None) -> None:
        self.browser = site.browser()
        self.token = token
        self.seen: list[str] = []

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        content_type: str | None = JSON,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        heads = dict(headers or {})
        if self.token is not None and "Authorization" not in heads:
            heads["Authorization"] = f"Bearer {self.token}"
        kw: dict[str, Any] = {}
        if body is not None or raw is not None:
            kw["data"] = raw if raw is not None else json.dumps(body).encode()
            if content_type is not None:
                heads["Content-Type"] = content_type
        code, answer, text = await self.browser.request(method, path, headers=heads, **kw)
        self.seen.append(text)
        if text:
            assert answer["content-type"] == JSON, (code, text[:200])
        return code, answer, json.loads(text) if text else None


class Tokens:
    def __init__(self, site: Site, secrets: dict[str, str], ids: dict[str, int]) -> None:
        self.site = site
        self.secrets = secrets
        self.ids = ids

    def client(self, user: str) -> Api:
        return Api(self.site, self.secrets[user])


@pytest.fixture
def site(backend: Backend) -> Site:
    return pytest_twisted.blockon(Deferred.fromCoroutine(make_site(backend)))


@pytest.fixture
def tokens(site: Site) -> Tokens:
    async def make() -> Tokens:
        secrets, ids = {}, {}
        for user in ("vera", "otto", "ada"):
            secret, token = await site.store.tokens.create(user, f"{user}-ci")
            secrets[user], ids[user] = secret, token.id
        return Tokens(site, secrets, ids)

    return pytest_twisted.blockon(Deferred.fromCoroutine(make()))


def new(i: int, **fields: Any) -> dict[str, Any]:
    return {"ldn": ldn(i), "system_title": title(i), **fields}


def refused(body: Any) -> list[tuple[int | None, str | None]]:
    return [(p["index"], p["field"]) for p in body["error"]["items"]]


async def seed(site: Site, count: int, history: tuple[int, ...] = ()) -> None:
    for i in range(count):
        await site.store.meters.add(NewMeter(ldn(i), system_title=bytes.fromhex(title(i))))
    now = dt.datetime.now(dt.UTC)
    for i in history:
        reading = Reading(ldn(i), INDEX, 2, 1234567, now, "cf47", now, -3, 14)
        await site.store.readings.ingest(
            Ingest(
                readings=[reading],
                statuses=[
                    MeterStatus(
                        ldn(i),
                        connected=now,
                        at=now,
                        index=reading,
                        diagnostic=0,
                        battery_value=3650,
                        valve_state=1,
                    )
                ],
            )
        )


async def seed_history(site: Site, i: int) -> None:
    now = dt.datetime.now(dt.UTC)
    await site.store.readings.add([Reading(ldn(i), INDEX, 2, 1, now, "cf47", now, 0, 14)])


# --- authentication and roles -------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_only_a_live_bearer_token_opens_the_api_with_its_users_role(
    site: Site, tokens: Tokens
) -> None:
    await seed(site, 1)
    anonymous = Api(site, None)
    for headers, error in (
        ({}, None),
        ({"Authorization": f"Basic {tokens.secrets['ada']}"}, "invalid_request"),
        ({"Authorization": "Bearer"}, "invalid_request"),
        ({"Authorization": "Bearer sac_not-a-token"}, "invalid_token"),
        ({"Authorization": "Bearer " + "x" * 5000}, "invalid_token"),
    ):
        code, heads, body = await anonymous.call("GET", "/api/v1/meters", headers=headers)
        assert code == 401 and body["error"]["code"] == "unauthorized", headers
        assert heads["www-authenticate"].startswith('Bearer realm="sac"')
        assert heads["www-authenticate"].endswith(f'error="{error}"' if error else '"sac"')
    # a signed-in browser's session cookie is not a credential here
    browser = await site.signed_in("ada")
    code, heads, text = await browser.request("GET", "/api/v1/meters")
    assert code == 401 and json.loads(text)["error"]["code"] == "unauthorized"
    # the scheme's name is case-insensitive
    code, _, _ = await anonymous.call(
        "GET", "/api/v1/meters", headers={"Authorization": f"bearer {tokens.secrets['vera']}"}
    )
    assert code == 200
    # a viewer reads, never writes
    viewer = tokens.client("vera")
    code, _, body = await viewer.call("GET", f"/api/v1/meters/{ldn(0)}")
    assert code == 200 and body["ldn"] == ldn(0)
    for method, path, payload in (
        ("POST", "/api/v1/meters", {"meters": [new(5)]}),
        ("PATCH", "/api/v1/meters", {"meters": [{"ldn": ldn(0), "pdr": "12345678901234"}]}),
        ("PATCH", f"/api/v1/meters/{ldn(0)}", {"pdr": "12345678901234"}),
        ("POST", f"/api/v1/meters/{ldn(0)}/disable", None),
        ("DELETE", f"/api/v1/meters/{ldn(0)}", None),
        ("POST", "/api/v1/meters/delete", {"ldns": [ldn(0)]}),
    ):
        code, _, body = await viewer.call(method, path, payload)
        assert code == 403 and body["error"]["code"] == "forbidden", (method, path)
        assert "operator" in body["error"]["message"]
    # a revoked token and a disabled user's token stop at once
    await site.store.tokens.revoke(tokens.ids["otto"])
    code, _, _ = await tokens.client("otto").call("GET", "/api/v1/meters")
    assert code == 401
    await site.store.users.update("vera", None, active=False)
    code, _, _ = await viewer.call("GET", "/api/v1/meters")
    assert code == 401
    meter = await site.store.meters.get(ldn(0))
    assert meter is not None and meter.pdr is None and await site.store.meters.count() == 1
    # the document needs no token
    code, _, doc = await anonymous.call("GET", "/api/v1/openapi.json")
    assert code == 200 and doc["openapi"].startswith("3.1")


# --- every route ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_every_route_does_its_change_and_each_is_audited(site: Site, tokens: Tokens) -> None:
    await seed(site, 1, history=(0,))
    api = tokens.client("otto")
    before = len(await site.store.audit.log(500))
    code, _, body = await api.call(
        "POST",
        "/api/v1/meters",
        {
            "meters": [
                new(
                    1,
                    pdr="12345678901234",
                    profile="fiorentini",
                    address="10.1.2.3:4059",
                    allowed_ips=["192.0.2.7", "2001:DB8::1"],
                    poll_interval_s=3600,
                    ek=EK,
                    ak=AK,
                ),
                new(2, ek=EK2.lower()),
                {"ldn": ldn(3)},
            ]
        },
    )
    assert code == 201, body
    first, second, third = body["meters"]
    assert first["ldn"] == ldn(1) and first["system_title"] == title(1)
    assert first["pdr"] == "12345678901234" and first["profile"] == "fiorentini"
    assert first["allowed_ips"] == ["192.0.2.7", "2001:db8::1"]
    assert first["poll_interval_s"] == 3600 and first["address"] == "10.1.2.3:4059"
    assert first["keys"] == {"management": "set"} and third["keys"] == {"management": "missing"}
    assert third["system_title"] is None and third["profile"] == site.web.registry.default
    assert first["created"].endswith("+00:00") and first["index"] is None
    keys = await site.store.keys.get(ldn(1), 1)
    assert keys is not None and (keys.ek, keys.ak) == (bytes.fromhex(EK), bytes.fromhex(AK))
    keys = await site.store.keys.get(ldn(2), 1)
    assert keys is not None and keys.ek == keys.ak == bytes.fromhex(EK2)
    assert second["keys"] == {"management": "set"}

    # one meter, with its last values: the index exact, as a string, with its unit
    code, _, meter = await api.call("GET", f"/api/v1/meters/{ldn(0)}")
    assert code == 200
    assert meter["index"]["value"] == "1234.567" and meter["index"]["unit"] == "Sm3"
    assert meter["index"]["unit_code"] == 14 and meter["index"]["captured"].endswith("+00:00")
    assert meter["battery"] == {"value": 3650, "unit": "d", "unit_code": 4}
    assert meter["valve_state"] == {"code": 1, "name": "open"}
    assert meter["diagnostic"] == {"value": 0, "flags": []}
    assert meter["keys"] == {"management": "missing"} and meter["last_connection"]
    code, _, body = await api.call("GET", "/api/v1/meters/API9999999999999")
    assert code == 404 and body["error"]["code"] == "not_found"

    # one meter changed: fields cleared and set, keys replaced
    code, _, meter = await api.call(
        "PATCH",
        f"/api/v1/meters/{ldn(1)}",
        {"pdr": None, "address": None, "poll_interval_s": None, "ek": EK2},
    )
    assert code == 200, meter
    assert meter["pdr"] is None and meter["address"] is None and meter["poll_interval_s"] is None
    assert meter["keys"] == {"management": "set"}
    keys = await site.store.keys.get(ldn(1), 1)
    assert keys is not None and keys.ek == keys.ak == bytes.fromhex(EK2)
    code, _, meter = await api.call("PATCH", f"/api/v1/meters/{ldn(3)}", {"pdr": "00000000000003"})
    assert code == 200 and meter["pdr"] == "00000000000003"
    code, _, body = await api.call("PATCH", f"/api/v1/meters/{ldn(3)}", {"system_title": title(1)})
    assert code == 409 and body["error"]["code"] == "conflict"
    assert refused(body) == [(None, "system_title")]
    code, _, body = await api.call("PATCH", "/api/v1/meters/API9999999999999", {"pdr": None})
    assert code == 404

    # several changed, state included
    code, _, body = await api.call(
        "PATCH",
        "/api/v1/meters",
        {
            "meters": [
                {"ldn": ldn(2), "state": "disabled", "allowed_ips": []},
                {"ldn": ldn(3), "profile": "honeywell-ei7", "ek": EK},
            ]
        },
    )
    assert code == 200, body
    assert [(m["ldn"], m["state"], m["profile"]) for m in body["meters"]] == [
        (ldn(2), "disabled", site.web.registry.default),
        (ldn(3), "active", "honeywell-ei7"),
    ]
    assert (await site.store.keys.get(ldn(3), 1)).ek == bytes.fromhex(EK)

    # disable and enable
    code, _, meter = await api.call("POST", f"/api/v1/meters/{ldn(1)}/disable")
    assert code == 200 and meter["state"] == "disabled"
    code, _, meter = await api.call("POST", f"/api/v1/meters/{ldn(2)}/enable")
    assert code == 200 and meter["state"] == "active"
    code, _, _ = await api.call("POST", "/api/v1/meters/API9999999999999/enable")
    assert code == 404

    # deleted: one, then several
    code, _, body = await api.call("DELETE", f"/api/v1/meters/{ldn(3)}")
    assert code == 204 and body is None
    code, _, body = await api.call("DELETE", f"/api/v1/meters/{ldn(3)}")
    assert code == 404
    code, _, body = await api.call("POST", "/api/v1/meters/delete", {"ldns": [ldn(1), ldn(2)]})
    assert code == 200 and body == {"deleted": 2, "purged": False}
    assert [m.ldn for m in (await site.store.meters.page()).meters] == [ldn(0)]

    trail = (await site.store.audit.log(500))[: len(await site.store.audit.log(500)) - before]
    actor = f"otto (API token #{tokens.ids['otto']} otto-ci)"
    assert {e.actor for e in trail} == {actor}
    assert all(e.address == "127.0.0.1" for e in trail)
    assert [(e.action, e.target) for e in reversed(trail)] == [
        ("add meters", None),
        ("update meters", None),  # with keys: all or nothing
        ("update meter", ldn(3)),
        ("update meters", None),
        ("set meter disabled", ldn(1)),
        ("set meter active", ldn(2)),
        ("delete meter", ldn(3)),
        ("delete meters", None),
    ]


# --- bulk: all or nothing -----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_bulk_add_names_every_bad_item_and_stores_none(site: Site, tokens: Tokens) -> None:
    await seed(site, 1)
    api = tokens.client("otto")
    before = len(await site.store.audit.log(500))
    batch = [
        new(10, ek=EK),  # 0: good
        new(11, pdr="12ab", ek=EK[:-2]),  # 1: two bad fields
        {"ldn": ldn(0)},  # 2: this LDN is stored already
        {"ldn": ldn(10)},  # 3: the LDN of item 0 again
        {"ldn": ldn(12), "system_title": title(0)},  # 4: another meter's system title
        {"ldn": ldn(13), "colour": "red", "pdr": 12345678901234},  # 5: unknown field, a number
        {"ldn": ldn(14), "poll_interval_s": 3600},  # 6: a poll interval without an address
        "API0000000000015",  # 7: not an object
        {"ldn": ["API0000000000016"], "allowed_ips": "192.0.2.1"},  # 8: a list, a string
        {"ldn": ldn(17), "profile": None, "ak": AK},  # 9: null profile, AK without EK
        {"ldn": ldn(18), "ek": EK, "address": "nohost", "allowed_ips": ["192.0.2.300"]},  # 10
        {"ldn": ldn(19), "system_title": title(19), "poll_interval_s": 59.5},  # 11
        new(20),  # 12: good
    ]
    code, _, body = await api.call("POST", "/api/v1/meters", {"meters": batch})
    assert code == 422 and body["error"]["code"] == "invalid", body
    assert body["error"]["message"] == "11 of the items are refused: nothing is changed"
    assert set(refused(body)) == {
        (1, "pdr"),
        (1, "ek"),
        (2, "ldn"),
        (3, "ldn"),
        (4, "system_title"),
        (5, "colour"),
        (5, "pdr"),
        (6, "poll_interval_s"),
        (7, None),
        (8, "ldn"),
        (8, "allowed_ips"),
        (9, "profile"),
        (9, "ak"),
        (10, "address"),
        (10, "allowed_ips"),
        (11, "poll_interval_s"),
    }
    assert [i for i, _ in refused(body)] == sorted(i for i, _ in refused(body))
    messages = {(p["index"], p["field"]): p["message"] for p in body["error"]["items"]}
    assert messages[(1, "pdr")] == "A PDR is 14 digits."  # the web form's rules
    assert messages[(1, "ek")] == "A key is 16 bytes: 32 hexadecimal digits."
    assert "already present" in messages[(2, "ldn")] and "#0" in messages[(3, "ldn")]
    assert messages[(5, "colour")] == "unknown field 'colour'"
    assert messages[(5, "pdr")] == "pdr must be a string, not a number"
    assert messages[(9, "profile")] == "profile must not be null"
    assert await site.store.meters.count() == 1
    assert await site.store.keys.get(ldn(10), 1) is None
    assert len(await site.store.audit.log(500)) == before  # nothing done, nothing recorded

    # the store's refusals alone (every field fine): a conflict with what is stored
    code, _, body = await api.call("POST", "/api/v1/meters", {"meters": [new(10), new(0)]})
    assert code == 422 and refused(body) == [(1, "ldn")]

    fixed = [new(10, ek=EK), new(11, pdr="12345678901234", ek=EK2, ak=AK), new(12)]
    code, _, body = await api.call("POST", "/api/v1/meters", {"meters": fixed})
    assert code == 201 and [m["ldn"] for m in body["meters"]] == [ldn(10), ldn(11), ldn(12)]
    assert (await site.store.keys.get(ldn(10), 1)).ek == bytes.fromhex(EK)
    keys = await site.store.keys.get(ldn(11), 1)
    assert (keys.ek, keys.ak) == (bytes.fromhex(EK2), bytes.fromhex(AK))
    assert await site.store.keys.get(ldn(12), 1) is None
    assert await site.store.meters.count() == 4


@pytest_twisted.ensureDeferred
async def test_a_bulk_change_or_delete_is_all_or_nothing(site: Site, tokens: Tokens) -> None:
    await seed(site, 4, history=(3,))
    api = tokens.client("ada")  # an admin may do what an operator does
    change = {
        "meters": [
            {"ldn": ldn(0), "pdr": "00000000000000", "ek": EK},
            {"ldn": "API9999999999999", "pdr": "00000000000001"},  # no such meter
            {"ldn": ldn(1), "system_title": title(2)},  # meter 2's
            {"ldn": ldn(2), "state": "retired", "address": None, "poll_interval_s": 600},
            {"ldn": ldn(0), "pdr": "00000000000002"},  # meter 0 again
            {"pdr": "00000000000003"},  # which meter?
        ]
    }
    code, _, body = await api.call("PATCH", "/api/v1/meters", change)
    assert code == 422, body
    assert set(refused(body)) == {
        (1, "ldn"),
        (2, "system_title"),
        (3, "state"),
        (3, "poll_interval_s"),
        (4, "ldn"),
        (5, "ldn"),
    }
    meter = await site.store.meters.get(ldn(0))
    assert meter is not None and meter.pdr is None  # item 0 was fine, and is not applied
    assert await site.store.keys.get(ldn(0), 1) is None
    code, _, body = await api.call(
        "PATCH", "/api/v1/meters", {"meters": [change["meters"][0], {"ldn": ldn(1)}]}
    )
    assert code == 200 and body["meters"][0]["pdr"] == "00000000000000"
    assert (await site.store.keys.get(ldn(0), 1)).ek == bytes.fromhex(EK)

    # delete: meter 3 has history, one is unknown, one twice -- none goes
    code, _, body = await api.call(
        "POST",
        "/api/v1/meters/delete",
        {"ldns": [ldn(0), ldn(3), "API9999999999999", ldn(0), 7]},
    )
    assert code == 422 and set(refused(body)) == {(1, "ldn"), (2, "ldn"), (3, "ldn"), (4, "ldn")}
    assert "purge" in body["error"]["items"][0]["message"]
    assert await site.store.meters.count() == 4
    code, _, body = await api.call("POST", "/api/v1/meters/delete", {"ldns": [ldn(0), ldn(3)]})
    assert code == 422 and refused(body) == [(1, "ldn")]
    assert await site.store.meters.count() == 4
    # one by one: history needs purge
    code, _, body = await api.call("DELETE", f"/api/v1/meters/{ldn(3)}?purge=false")
    assert code == 409 and body["error"]["code"] == "conflict"
    code, _, body = await api.call("DELETE", f"/api/v1/meters/{ldn(3)}?purge=maybe")
    assert code == 400 and body["error"]["code"] == "bad_parameter"
    code, _, _ = await api.call("DELETE", f"/api/v1/meters/{ldn(3)}?purge=true")
    assert code == 204 and await site.store.meters.get(ldn(3)) is None
    await seed_history(site, 2)
    code, _, body = await api.call(
        "POST", "/api/v1/meters/delete", {"ldns": [ldn(1), ldn(2)], "purge": True}
    )
    assert code == 200 and body == {"deleted": 2, "purged": True}
    code, _, body = await api.call("POST", "/api/v1/meters/delete", {"ldns": [ldn(0)], "purge": 1})
    assert code == 400 and body["error"]["code"] == "invalid_body"
    assert [m.ldn for m in (await site.store.meters.page()).meters] == [ldn(0)]
    purged = [e for e in await site.store.audit.log(50) if e.action.startswith("delete")]
    assert [(e.action, e.detail) for e in purged] == [
        ("delete meters", "2 meters with their history"),
        ("delete meter", "with its history"),
    ]


# --- the list -------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_the_list_pages_through_every_meter_once_and_filters(
    site: Site, tokens: Tokens
) -> None:
    await seed(site, 7)
    api = tokens.client("vera")
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        path = "/api/v1/meters?limit=3" + (f"&after={after}" if after else "")
        code, _, body = await api.call("GET", path)
        assert code == 200 and body["total"] == 7 and "keys" not in body["meters"][0]
        seen += [m["ldn"] for m in body["meters"]]
        pages += 1
        after = body["next"]
        if after is None:
            break
    assert seen == [ldn(i) for i in range(7)] and pages == 3
    code, _, body = await api.call("GET", "/api/v1/meters")
    assert code == 200 and len(body["meters"]) == 7 and body["next"] is None

    since = dt.datetime.now(dt.UTC)
    await site.store.meters.update(ldn(5), {"pdr": "55555555555555"})
    await site.store.meters.set_state(ldn(2), MeterState.DISABLED)
    stamp = since.isoformat().replace("+00:00", "Z")
    code, _, body = await api.call("GET", f"/api/v1/meters?changed_since={stamp}")
    assert code == 200 and [m["ldn"] for m in body["meters"]] == [ldn(2), ldn(5)]
    assert body["total"] == 2
    rome = since.astimezone(dt.timezone(dt.timedelta(hours=1))).isoformat()
    code, _, body = await api.call(
        "GET", "/api/v1/meters?changed_since=" + rome.replace("+", "%2B") + "&state=active"
    )
    assert code == 200 and [m["ldn"] for m in body["meters"]] == [ldn(5)]
    code, _, body = await api.call("GET", "/api/v1/meters?state=disabled")
    assert [m["ldn"] for m in body["meters"]] == [ldn(2)]

    for query in (
        "limit=0",
        "limit=1001",
        "limit=ten",
        "limit=-1",
        "changed_since=2025-01-01T00:00:00",  # no offset
        "changed_since=yesterday",
        "state=retired",
        "sort=pdr",
        "limit=1&limit=2",
    ):
        code, _, body = await api.call("GET", f"/api/v1/meters?{query}")
        assert code == 400 and body["error"]["code"] == "bad_parameter", query


# --- bad input ------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_bad_bodies_are_clear_json_errors_never_500(site: Site, tokens: Tokens) -> None:
    await seed(site, 1)
    api = tokens.client("otto")
    for raw, code_, error in (
        (b'{"meters": [', 400, "malformed_json"),
        (b"\xff\xfe{}", 400, "malformed_json"),
        (b'{"meters": [{"ldn": NaN}]}', 400, "malformed_json"),
        (b'{"meters": [], "meters": []}', 400, "malformed_json"),
        (b"[" * 100000 + b"]" * 100000, 400, "malformed_json"),
        (b"[]", 400, "invalid_body"),
        (b'"meters"', 400, "invalid_body"),
        (b"{}", 400, "invalid_body"),
        (b'{"meters": {}}', 400, "invalid_body"),
        (b'{"meters": []}', 400, "invalid_body"),
        (b'{"meters": [], "dry_run": true}', 400, "invalid_body"),
    ):
        for method in ("POST", "PATCH"):
            code, _, body = await api.call(method, "/api/v1/meters", raw=raw)
            assert (code, body["error"]["code"]) == (code_, error), (method, raw[:40], body)
    code, _, body = await api.call("POST", "/api/v1/meters", {"meters": [{}] * (MAX_ITEMS + 1)})
    assert code == 422 and body["error"]["code"] == "too_many_items"
    code, _, body = await api.call(
        "POST", "/api/v1/meters", raw=b'{"meters": ["' + b"x" * MAX_BODY + b'"]}'
    )
    assert code == 413 and body["error"]["code"] == "too_large"
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        code, _, body = await api.call(
            "POST", "/api/v1/meters", {"meters": [new(5)]}, content_type=content_type
        )
        assert code == 415 and body["error"]["code"] == "unsupported_media_type"
    code, _, body = await api.call(
        "POST",
        "/api/v1/meters",
        {"meters": [new(5)]},
        content_type="application/json; charset=utf-8",
    )
    assert code == 201
    # one meter's change: wrong types, unknown fields, a body not an object
    for payload, fields in (
        ({"pdr": 12345678901234}, ["pdr"]),
        ({"ldn": ldn(1)}, ["ldn"]),
        ({"allowed_ips": [1]}, ["allowed_ips"]),
        ({"state": None, "profile": None}, ["profile", "state"]),
        ({"poll_interval_s": True, "Ek": EK}, ["Ek", "poll_interval_s"]),
        ({"ek": EK.replace("A", "G")}, ["ek"]),
        ({"address": None, "poll_interval_s": 600}, ["poll_interval_s"]),
    ):
        code, _, body = await api.call("PATCH", f"/api/v1/meters/{ldn(0)}", payload)
        assert code == 422 and sorted(f for _, f in refused(body)) == fields, payload
    code, _, body = await api.call("PATCH", f"/api/v1/meters/{ldn(0)}", ["pdr"])
    assert code == 400 and body["error"]["code"] == "invalid_body"
    code, _, body = await api.call("PUT", "/api/v1/meters")
    assert code == 405 and body["error"]["code"] == "method_not_allowed"
    code, _, body = await api.call("GET", "/api/v1/readings")
    assert code == 404 and body["error"]["code"] == "not_found"
    meter = await site.store.meters.get(ldn(0))
    assert meter is not None and meter.pdr is None


@pytest_twisted.ensureDeferred
async def test_a_crash_is_a_json_500_without_a_traceback(
    site: Site, tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any, **kw: Any) -> Any:
        raise RuntimeError("boom in the store")

    monkeypatch.setattr(site.store.meters, "page", broken)
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        code, _, body = await tokens.client("vera").call("GET", "/api/v1/meters")
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert code == 500 and body["error"]["code"] == "internal"
    assert "boom" not in json.dumps(body) and "Traceback" not in json.dumps(body)
    incident = re.search(r"incident (\w+)", body["error"]["message"]).group(1)
    assert any(e.get("incident") == incident for e in events)
    # the pages keep their HTML errors
    code, heads, _ = await site.browser().request("GET", "/no-such-page")
    assert code == 404 and heads["content-type"].startswith("text/html")


# --- keys are write-only -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_keys_never_come_back(site: Site, tokens: Tokens) -> None:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        api = tokens.client("otto")
        payload = {"meters": [new(1, ek=EK, ak=AK), new(2, ek=EK2)]}
        assert (await api.call("POST", "/api/v1/meters", payload))[0] == 201
        for method, path, body in (
            ("POST", "/api/v1/meters", payload),  # conflicts
            ("POST", "/api/v1/meters", {"meters": [new(3, ek=EK + "00", ak=AK[:-1])]}),
            ("POST", "/api/v1/meters", {"meters": [new(4, ek=[EK], ak=None)]}),
            ("POST", "/api/v1/meters", {"meters": [{**new(5, ek=EK), EK: AK}]}),
            ("GET", f"/api/v1/meters/{ldn(1)}", None),
            ("GET", "/api/v1/meters", None),
            ("PATCH", f"/api/v1/meters/{ldn(1)}", {"ek": EK2, "ak": AK}),
            ("PATCH", "/api/v1/meters", {"meters": [{"ldn": ldn(2), "ek": EK, "ak": AK}]}),
            ("PATCH", "/api/v1/meters", {"meters": [{"ldn": ldn(9), "ek": EK, "ak": AK}]}),
            ("POST", f"/api/v1/meters/{ldn(1)}/disable", None),
        ):
            await api.call(method, path, body)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert (await site.store.keys.get(ldn(2), 1)).ak == bytes.fromhex(AK)
    said = "\n".join(api.seen) + "\n" + "\n".join(map(repr, events))
    said += "\n".join(map(repr, await site.store.audit.log(500)))
    for key in SECRETS:
        for form in (key, key.lower(), key[:16], key[:16].lower()):
            assert form not in said, form


# --- the document ---------------------------------------------------------------------------


def test_the_openapi_document_matches_the_router() -> None:
    from sac.web.api import openapi

    routed: set[tuple[str, str]] = set()
    for rule in route_rules():
        if rule.rule.startswith("/api/"):
            path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
            routed |= {
                (path, m.lower()) for m in rule.methods or () if m not in ("HEAD", "OPTIONS")
            }
    doc = openapi(["fiorentini"])
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert routed == documented
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    # every reference resolves, every operation says what a refusal looks like
    text = json.dumps(doc)
    for kind, name in re.findall(r'"#/components/(\w+)/(\w+)"', text):
        assert name in doc["components"][kind], name
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if path.endswith("openapi.json"):
                assert op["security"] == []
            else:
                assert {"401", "403"} <= set(op["responses"]), (path, method)


def test_each_field_is_declared_once_for_the_api_the_form_and_the_document() -> None:
    from sac.errors import FieldError
    from sac.web.forms import parse_meter_form
    from sac.web.openapi import openapi
    from sac.web.schema import FIELDS, NEW_FIELDS

    schemas = openapi(["fiorentini"])["components"]["schemas"]
    assert list(schemas["NewMeter"]["properties"]) == list(NEW_FIELDS)
    assert set(schemas["MeterChangeOne"]["properties"]) == set(FIELDS) - {"ldn"}
    for name, field in FIELDS.items():
        declared = schemas["MeterChange" if name != "ldn" else "NewMeter"]["properties"][name]
        types = declared["type"] if isinstance(declared["type"], list) else [declared["type"]]
        assert ("null" in types) == field.nullable, name
        assert field.schema_type in types, name
    # the same rule in the same words, next to the form's field and in the API's refusal
    for name, typed in (("pdr", "123"), ("system_title", "2D4D"), ("address", "nowhere")):
        form = parse_meter_form({name: typed}, ["fiorentini"])
        with pytest.raises(FieldError) as refused:
            FIELDS[name].parse(typed, ["fiorentini"])
        assert form.errors[name] == str(refused.value), name
