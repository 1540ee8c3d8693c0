"""Who may do what: every route of the pages, the JSON API and every SOAP operation, tried
without credentials, as a viewer, an operator and an admin, and every form with a stale CSRF
token.  The expected outcome comes from POLICY below, written as the security intention and
not read from the code; a route the router has and POLICY lacks fails the test.  The table
tried is written to build/access-table.md.

Outcomes: ``allowed`` (the guard let the request through: any answer below 500 that is not a
refusal; a 400 or 404 for the dummy input is fine), ``sign-in`` (a page redirects to the
sign-in form; the API answers 401; SOAP faults ``Client.Authentication``) and ``forbidden``
(403; SOAP ``Client.Forbidden``).
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest_twisted

from sac.store import Actor, NewMeter, Role
from sac.web.app import route_rules
from tests.web.conftest import PASSWORD, Backend, make_site

ROOT = Path(__file__).resolve().parents[2]
LDN = "SIM0000000000001"
PUBLIC = "public"
ROLES = (Role.VIEWER, Role.OPERATOR, Role.ADMIN)
USERS = {Role.VIEWER: "vera", Role.OPERATOR: "otto", Role.ADMIN: "ada"}

# (method, rule): who may (PUBLIC or the least role), and the request's path
POLICY: dict[tuple[str, str], tuple[str | Role, str]] = {
    ("GET", "/"): (PUBLIC, "/"),  # a redirect to /meters
    ("GET", "/login"): (PUBLIC, "/login"),
    ("POST", "/login"): (PUBLIC, "/login"),
    ("GET", "/health"): (PUBLIC, "/health"),
    ("GET", "/metrics"): (PUBLIC, "/metrics"),  # [web] metrics_public = yes, the default
    ("GET", "/static/"): (PUBLIC, "/static/sac.css"),
    ("POST", "/logout"): (Role.VIEWER, "/logout"),
    ("GET", "/meters"): (Role.VIEWER, "/meters"),
    ("GET", "/meters/<string(length=16):ldn>"): (Role.VIEWER, f"/meters/{LDN}"),
    ("GET", "/commands/<int:command_id>.json"): (Role.VIEWER, "/commands/999999.json"),
    ("GET", "/status"): (Role.VIEWER, "/status"),
    ("GET", "/jobs"): (Role.VIEWER, "/jobs"),
    ("GET", "/jobs/new"): (Role.OPERATOR, "/jobs/new"),
    ("POST", "/jobs"): (Role.OPERATOR, "/jobs"),
    ("GET", "/jobs/<int:job_id>"): (Role.VIEWER, "/jobs/999999"),
    ("GET", "/jobs/<int:job_id>.json"): (Role.VIEWER, "/jobs/999999.json"),
    ("POST", "/jobs/<int:job_id>/cancel"): (Role.OPERATOR, "/jobs/999999/cancel"),
    ("GET", "/alarms"): (Role.VIEWER, "/alarms"),
    ("POST", "/alarms/<int:alarm_id>/acknowledge"): (Role.OPERATOR, "/alarms/999999/acknowledge"),
    ("POST", "/alarms/meters/<string(length=16):ldn>/acknowledge"): (
        Role.OPERATOR,
        f"/alarms/meters/{LDN}/acknowledge",
    ),
    ("GET", "/meters/import/sample.csv"): (Role.VIEWER, "/meters/import/sample.csv"),
    ("GET", "/meters/new"): (Role.OPERATOR, "/meters/new"),
    ("POST", "/meters/new"): (Role.OPERATOR, "/meters/new"),
    ("GET", "/meters/import"): (Role.OPERATOR, "/meters/import"),
    ("POST", "/meters/import"): (Role.OPERATOR, "/meters/import"),
    ("GET", "/meters/<string(length=16):ldn>/valve"): (Role.OPERATOR, f"/meters/{LDN}/valve"),
    ("POST", "/meters/<string(length=16):ldn>/valve"): (Role.OPERATOR, f"/meters/{LDN}/valve"),
    ("GET", "/meters/<string(length=16):ldn>/settings"): (Role.VIEWER, f"/meters/{LDN}/settings"),
    ("POST", "/meters/<string(length=16):ldn>/settings/read"): (
        Role.OPERATOR,
        f"/meters/{LDN}/settings/read",
    ),
    ("POST", "/meters/<string(length=16):ldn>/settings/edit"): (
        Role.OPERATOR,
        f"/meters/{LDN}/settings/edit",
    ),
    ("POST", "/meters/<string(length=16):ldn>/settings/write"): (
        Role.OPERATOR,
        f"/meters/{LDN}/settings/write",
    ),
    ("POST", "/meters/<string(length=16):ldn>/counters/reset"): (
        Role.ADMIN,
        f"/meters/{LDN}/counters/reset",
    ),
    ("GET", "/admin/users"): (Role.ADMIN, "/admin/users"),
    ("POST", "/admin/users"): (Role.ADMIN, "/admin/users"),
    ("POST", "/admin/users/change"): (Role.ADMIN, "/admin/users/change"),
    ("GET", "/admin/audit"): (Role.ADMIN, "/admin/audit"),
    ("GET", "/admin/system"): (Role.ADMIN, "/admin/system"),
    ("GET", "/admin/tokens"): (Role.ADMIN, "/admin/tokens"),
    ("POST", "/admin/tokens"): (Role.ADMIN, "/admin/tokens"),
    ("POST", "/admin/tokens/revoke"): (Role.ADMIN, "/admin/tokens/revoke"),
    # the JSON API: API tokens only
    ("GET", "/api/v1/openapi.json"): (PUBLIC, "/api/v1/openapi.json"),
    ("GET", "/api/v1/meters"): (Role.VIEWER, "/api/v1/meters"),
    ("GET", "/api/v1/meters/<ldn>"): (Role.VIEWER, f"/api/v1/meters/{LDN}"),
    ("GET", "/api/v1/meters/<ldn>/connections"): (
        Role.VIEWER,
        f"/api/v1/meters/{LDN}/connections",
    ),
    ("POST", "/api/v1/meters"): (Role.OPERATOR, "/api/v1/meters"),
    ("PATCH", "/api/v1/meters"): (Role.OPERATOR, "/api/v1/meters"),
    ("PATCH", "/api/v1/meters/<ldn>"): (Role.OPERATOR, f"/api/v1/meters/{LDN}"),
    ("DELETE", "/api/v1/meters/<ldn>"): (Role.OPERATOR, "/api/v1/meters/NOSUCHMETER00000"),
    ("POST", "/api/v1/meters/<ldn>/disable"): (Role.OPERATOR, "/api/v1/meters/NOSUCH/disable"),
    ("POST", "/api/v1/meters/<ldn>/enable"): (Role.OPERATOR, "/api/v1/meters/NOSUCH/enable"),
    ("POST", "/api/v1/meters/delete"): (Role.OPERATOR, "/api/v1/meters/delete"),
    ("GET", "/api/v1/meters/<ldn>/events"): (Role.VIEWER, f"/api/v1/meters/{LDN}/events"),
    ("GET", "/api/v1/alarms"): (Role.VIEWER, "/api/v1/alarms"),
    ("POST", "/api/v1/alarms/<int:alarm_id>/acknowledge"): (
        Role.OPERATOR,
        "/api/v1/alarms/999999/acknowledge",
    ),
    ("GET", "/api/v1/meters/<ldn>/readings"): (
        Role.VIEWER,
        f"/api/v1/meters/{LDN}/readings?object=pdr",
    ),
    ("GET", "/api/v1/meters/<ldn>/daily"): (Role.VIEWER, f"/api/v1/meters/{LDN}/daily"),
    ("GET", "/api/v1/meters/<ldn>/settings"): (Role.VIEWER, f"/api/v1/meters/{LDN}/settings"),
    ("GET", "/api/v1/exports/month-start"): (
        Role.VIEWER,
        "/api/v1/exports/month-start?year=2026&month=11",
    ),
    ("GET", "/api/v1/jobs"): (Role.VIEWER, "/api/v1/jobs"),
    ("POST", "/api/v1/jobs"): (Role.OPERATOR, "/api/v1/jobs"),
    ("GET", "/api/v1/jobs/<int:job_id>"): (Role.VIEWER, "/api/v1/jobs/999999"),
    ("POST", "/api/v1/jobs/<int:job_id>/cancel"): (Role.OPERATOR, "/api/v1/jobs/999999/cancel"),
    ("POST", "/api/v1/meters/<ldn>/commands"): (Role.OPERATOR, f"/api/v1/meters/{LDN}/commands"),
    ("GET", "/api/v1/meters/<ldn>/commands"): (Role.VIEWER, f"/api/v1/meters/{LDN}/commands"),
    ("GET", "/api/v1/commands"): (Role.VIEWER, "/api/v1/commands"),
    ("GET", "/api/v1/commands/<int:command_id>"): (Role.VIEWER, "/api/v1/commands/999999"),
    ("POST", "/api/v1/commands/<int:command_id>/cancel"): (
        Role.OPERATOR,
        "/api/v1/commands/999999/cancel",
    ),
    # SOAP: the WSDL is public, each operation checks its caller (SOAP_POLICY)
    ("GET", "/soap"): (PUBLIC, "/soap?wsdl"),
    ("POST", "/soap"): (PUBLIC, "/soap"),
}
# every method of these rules is the same handler: one row covers them
SAME_HANDLER = {"/soap": "GET", "/soap/<path:__rest__>": None, "/static/<path:__rest__>": None}
SOAP_POLICY = {
    "ListMeters": Role.VIEWER,
    "GetMeter": Role.VIEWER,
    "GetReadings": Role.VIEWER,
    "ExportIndexReadings": Role.VIEWER,
    "ExportMonthStartIndexes": Role.VIEWER,
    "GetDailyConsumption": Role.VIEWER,
    "GetEvents": Role.VIEWER,
    "GetConnections": Role.VIEWER,
    "GetValveState": Role.VIEWER,
    "GetCommandStatus": Role.VIEWER,
    "RequestValve": Role.OPERATOR,
    "GetOpenAlarms": Role.VIEWER,
    "AcknowledgeAlarm": Role.OPERATOR,
    "StartJob": Role.OPERATOR,
    "GetJob": Role.VIEWER,
    "ListJobs": Role.VIEWER,
    "CancelJob": Role.OPERATOR,
    "RequestCommand": Role.OPERATOR,
    "ListCommands": Role.VIEWER,
    "CancelCommand": Role.OPERATOR,
}


def router_rules() -> set[tuple[str, str]]:
    found = set()
    for rule in route_rules():
        if rule.rule in SAME_HANDLER:
            if SAME_HANDLER[rule.rule] is not None:
                found |= {("GET", rule.rule), ("POST", rule.rule)}
            continue
        methods = (rule.methods or {"GET"}) - {"HEAD", "OPTIONS"}
        found |= {(method, rule.rule) for method in methods}
    return found


def expected(least: str | Role, who: Role | None) -> str:
    if least == PUBLIC:
        return "allowed"
    if who is None:
        return "sign-in"
    return "allowed" if who.may(least) else "forbidden"  # type: ignore[arg-type]


def outcome(code: int, heads: dict[str, str], body: str, api: bool) -> str:
    # SOAP 1.1 answers a fault with 500; a client's fault is not a crash, a server's is
    client_fault = re.search(r"<faultcode>[^<:]*:?Client", body) is not None
    assert code < 500 or client_fault, (code, body[:300])
    if api:
        return {401: "sign-in", 403: "forbidden"}.get(code, "allowed")
    if code in (302, 303) and heads.get("location", "").startswith("/login?next="):
        return "sign-in"
    if "Client.Authentication" in body:
        return "sign-in"
    if code == 403 or "Client.Forbidden" in body:
        return "forbidden"
    return "allowed"


SPAN = {"start": "2026-01-01T00:00:00+01:00", "end": "2026-02-01T00:00:00+01:00"}
SOAP_ARGS: dict[str, dict[str, str]] = {  # schema-valid: the call reaches its method
    "ListMeters": {},
    "GetMeter": {"ldn": LDN},
    "GetReadings": {"ldn": LDN, **SPAN},
    "ExportIndexReadings": SPAN,
    "ExportMonthStartIndexes": {"year": "2026", "month": "11"},
    "GetDailyConsumption": {"ldn": LDN, "first": "2026-03-01", "last": "2026-03-31"},
    "GetEvents": SPAN,
    "GetConnections": {"ldn": LDN, **SPAN},
    "GetValveState": {"ldn": LDN},
    "GetCommandStatus": {"id": "999999"},
    "RequestValve": {"ldn": LDN, "action": "close"},
    "GetOpenAlarms": {},
    "AcknowledgeAlarm": {"id": "999999", "note": "seen"},
    "StartJob": {"kind": "sync-clock", "expires": "2099-01-01T00:00:00Z"},
    "GetJob": {"id": "999999"},
    "ListJobs": {},
    "CancelJob": {"id": "999999"},
    "RequestCommand": {"ldn": LDN, "kind": "sync-clock"},
    "ListCommands": {},
    "CancelCommand": {"id": "999999"},
}


def soap_envelope(operation: str) -> str:
    args = "".join(f"<tns:{k}>{v}</tns:{k}>" for k, v in SOAP_ARGS[operation].items())
    return (
        '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"'
        ' xmlns:tns="urn:sac:erp:1"><soap:Body>'
        f"<tns:{operation}>{args}</tns:{operation}></soap:Body></soap:Envelope>"
    )


@pytest_twisted.ensureDeferred
async def test_every_route_and_operation_by_role(backend: Backend) -> None:
    assert router_rules() == set(POLICY), "routes without a policy, or policies without a route"
    assert set(SOAP_POLICY) == set(SOAP_ARGS)
    site = await make_site(backend)
    await site.store.meters.add(
        NewMeter(LDN, pdr="12345678901234", system_title=bytes.fromhex("2D4D010000000001")),
        Actor("test"),
    )
    tokens = {
        role: (await site.store.tokens.create(USERS[role], f"access {role.value}"))[0]
        for role in ROLES
    }
    rows: list[tuple[str, str, str, str, str]] = []
    failures: list[str] = []

    async def check(route: str, who: str, want: str, got: str) -> None:
        rows.append((route, who, want, got, "ok" if want == got else "WRONG"))
        if want != got:
            failures.append(f"{route} as {who}: expected {want}, got {got}")

    for (method, rule), (least, path) in sorted(POLICY.items(), key=lambda kv: kv[0][::-1]):
        api = path.startswith("/api/")
        route = f"{method} {rule}"
        for who in (None, *ROLES):
            name = who.value if who else "nobody"
            browser = site.browser()
            headers: dict[str, str] = {}
            if api and who is not None:
                headers["Authorization"] = f"Bearer {tokens[who]}"
            elif who is not None:
                browser = await site.signed_in(USERS[who])
            if method == "GET" or api:
                code, heads, body = await browser.request(method, path, headers=headers)
            else:
                if who is None or rule == "/login":
                    await browser.get("/login")  # the sign-in form's own token
                code, heads, body = await browser.post(path, {}, headers=headers)
            await check(route, name, expected(least, who), outcome(code, heads, body, api))
        # a form posted with a stale CSRF token is refused, whoever posts it
        if method == "POST" and not api and rule != "/soap":
            for who in (Role.OPERATOR, Role.ADMIN):
                browser = await site.signed_in(USERS[who])
                code, heads, body = await browser.post(path, {"csrf": "stale-token"})
                await check(
                    route,
                    f"{who.value}, stale CSRF",
                    "forbidden",
                    outcome(code, heads, body, False),
                )
    for operation, least in SOAP_POLICY.items():
        for who in (None, *ROLES):
            headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": operation}
            if who is not None:
                basic = base64.b64encode(f"{USERS[who]}:{PASSWORD}".encode()).decode()
                headers["Authorization"] = f"Basic {basic}"
            browser = site.browser()
            code, heads, body = await browser.request(
                "POST", "/soap", data=soap_envelope(operation).encode(), headers=headers
            )
            name = who.value if who else "nobody"
            await check(
                f"SOAP {operation}", name, expected(least, who), outcome(code, heads, body, False)
            )
    table = ["| route | as | expected | got | |", "|---|---|---|---|---|"]
    table += [f"| `{r}` | {w} | {e} | {g} | {ok} |" for r, w, e, g, ok in rows]
    out = ROOT / "build" / f"access-table-{backend.kind}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        f"# Routes x roles: {len(rows)} requests, {len(failures)} wrong\n\n"
        + "\n".join(table)
        + "\n"
    )
    assert not failures, "\n".join(failures)
    assert len(rows) >= 4 * (len(POLICY) + len(SOAP_POLICY))
