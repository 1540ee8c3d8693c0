"""Every route, role and validation path of the operators' pages, through Klein."""

from __future__ import annotations

import datetime as dt
import re

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from sac.dlms import Obis
from sac.store import Actor, Event, Ingest, MeterStatus, NewMeter, Reading
from tests.web.conftest import Backend, Site, make_site

INDEX = Obis("7.0.13.2.0.255")
LOGBOOK = Obis("7.0.99.98.0.255")
SYSTEM = Actor("test")
EK = "000102030405060708090A0B0C0D0E0F"


def ldn(i: int) -> str:
    return f"FIO{i:013d}"


async def seed(site: Site, count: int = 6) -> dt.datetime:
    """Meters with list values: meter i has index 1000*i litres, battery 100*i days, valve
    open except meter 2 (closed), an alarm on meter 3, meter 5 never seen."""
    now = dt.datetime.now(dt.UTC)
    for i in range(count):
        await site.store.meters.add(
            NewMeter(ldn(i), pdr=f"{i:014d}", system_title=bytes([0x2F, 0x19, 0, 0, 0, 0, 0, i]))
        )
        if i == 5:
            continue
        seen = now - dt.timedelta(days=i * 3)
        reading = Reading(ldn(i), INDEX, 2, 1000 * i, seen, "cf47", seen, -3, 14)
        await site.store.readings.ingest(
            Ingest(
                readings=[reading],
                statuses=[
                    MeterStatus(
                        ldn(i),
                        connected=seen,
                        at=seen,
                        index=reading,
                        diagnostic=0x80 if i == 3 else 0,
                        battery_value=100 * i,
                        valve_state=0 if i == 2 else 1,
                    )
                ],
            )
        )
    return now


def ldns_in(page: str) -> list[str]:
    return re.findall(r'<td><a href="/meters/(FIO\d{13})">', page)


@pytest.fixture
def site(backend: Backend) -> Site:
    return pytest_twisted.blockon(Deferred.fromCoroutine(make_site(backend)))


# --- sign-in ------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_pages_need_a_session_and_send_back_to_them_after_sign_in(site: Site) -> None:
    browser = site.browser()
    code, heads, _ = await browser.get("/meters?sort=pdr")
    assert code == 303 and heads["location"] == "/login?next=%2Fmeters%3Fsort%3Dpdr"
    code, heads, page = await browser.get("/login?next=%2Fmeters%3Fsort%3Dpdr")
    assert code == 200 and 'name="next" value="/meters?sort=pdr"' in page
    code, heads, _ = await browser.post(
        "/login",
        {"username": "vera", "password": "correct horse battery", "next": "/meters?sort=pdr"},
    )
    assert code == 303 and heads["location"] == "/meters?sort=pdr"
    assert "HttpOnly" in heads["set-cookie"] and "SameSite=strict" in heads["set-cookie"]
    code, _, page = await browser.get("/meters")
    assert code == 200 and "vera" in page
    # no open redirect
    other = site.browser()
    await other.get("/login")
    code, heads, _ = await other.post(
        "/login",
        {"username": "vera", "password": "correct horse battery", "next": "//evil.example/"},
    )
    assert heads["location"] == "/meters"


@pytest_twisted.ensureDeferred
async def test_a_wrong_password_and_a_forged_sign_in_form_are_refused(site: Site) -> None:
    browser = site.browser()
    await browser.get("/login")
    code, _, page = await browser.post("/login", {"username": "vera", "password": "nope"})
    assert code == 403 and "Wrong user name or password." in page
    assert "sac_session" not in browser.cookies
    forged = site.browser()  # no sign-in cookie: the form did not come from the SAC
    code, _, page = await forged.post(
        "/login", {"username": "vera", "password": "correct horse battery", "csrf": "x"}, csrf=False
    )
    assert code == 403 and "expired" in page and "sac_session" not in forged.cookies


@pytest_twisted.ensureDeferred
async def test_repeated_failures_lock_the_account(site: Site) -> None:
    browser = site.browser()
    for _ in range(5):
        await browser.sign_in("otto", "wrong password")
    code, _, page = await browser.sign_in("otto")
    # the right password of a locked user: the answer of a wrong one (no user enumeration)
    assert code == 403 and "Wrong user name or password." in page and "too many" not in page
    entries = [(e.action, e.detail) for e in await site.store.audit.log()]
    assert ("sign-in failed", "locked out: password not checked") in entries
    actions = [action for action, _ in entries]
    assert "locked out" in actions and actions.count("sign-in failed") == 6


@pytest_twisted.ensureDeferred
async def test_sign_out_ends_the_session(site: Site) -> None:
    browser = await site.signed_in("vera")
    token = browser.cookies["sac_session"]
    code, heads, _ = await browser.post("/logout")
    assert code == 303 and heads["location"] == "/login"
    browser.cookies["sac_session"] = token  # the old cookie, replayed
    code, heads, _ = await browser.get("/meters")
    assert code == 303 and heads["location"].startswith("/login")


# --- roles and CSRF -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_viewers_read_but_do_not_change(site: Site) -> None:
    await seed(site, 1)
    viewer = await site.signed_in("vera")
    for path in ("/meters", f"/meters/{ldn(0)}", "/status", "/meters/import/sample.csv"):
        code, _, _ = await viewer.get(path)
        assert code == 200, path
    for path in ("/meters/new", "/meters/import", f"/meters/{ldn(0)}/valve?action=close"):
        code, _, page = await viewer.get(path)
        assert code == 403 and "Not allowed" in page, path
    code, _, _ = await viewer.post(
        f"/meters/{ldn(0)}/valve", {"action": "close", "confirm": ldn(0)}
    )
    assert code == 403
    assert await site.store.commands.recent(ldn(0)) == []
    code, _, page = await viewer.get(f"/meters/{ldn(0)}")
    assert "Close the valve" not in page  # the valve section is for operators


@pytest_twisted.ensureDeferred
async def test_a_post_without_the_sessions_csrf_token_is_refused(site: Site) -> None:
    await seed(site, 1)
    operator = await site.signed_in("otto")
    await operator.get("/meters")
    for token in (None, "not-the-token"):
        data = {"action": "close", "confirm": ldn(0)}
        if token is not None:
            data["csrf"] = token
        code, _, page = await operator.post(f"/meters/{ldn(0)}/valve", data, csrf=False)
        assert code == 403 and "Form expired" in page
    assert await site.store.commands.recent(ldn(0)) == []


# --- the meter list -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_the_list_shows_each_meters_values(site: Site) -> None:
    await seed(site)
    viewer = await site.signed_in("vera")
    code, _, page = await viewer.get("/meters")
    assert code == 200 and ldns_in(page) == [ldn(i) for i in range(6)]
    assert "<small>6</small>" in page
    row = page[page.index(ldn(4)) :].split("</tr>")[0]
    assert "4.000 Sm³" in row and "400 days" in row and "open" in row and f"{4:014d}" in row
    closed = page[page.index(ldn(2)) :].split("</tr>")[0]
    assert "closed" in closed
    alarm = page[page.index(ldn(3)) :].split("</tr>")[0]
    assert "0x0080" in alarm
    never = page[page.index(ldn(5)) :].split("</tr>")[0]
    assert "never" in never


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("sort=index&dir=desc", [4, 3, 2, 1, 0, 5]),
        ("sort=battery&dir=asc", [0, 1, 2, 3, 4, 5]),
        ("sort=last_connection&dir=desc", [0, 1, 2, 3, 4, 5]),
        ("valve=0", [2]),
        ("alarms=1", [3]),
        ("unseen=5", [2, 3, 4, 5]),
        ("q=FIO000000000000", [0, 1, 2, 3, 4, 5]),
        ("q=00000000000003", [3]),
        ("sort=nonsense", [0, 1, 2, 3, 4, 5]),
    ],
)
@pytest_twisted.ensureDeferred
async def test_the_list_sorts_and_filters(site: Site, query: str, expected: list[int]) -> None:
    await seed(site)
    viewer = await site.signed_in("vera")
    code, _, page = await viewer.get(f"/meters?{query}")
    assert code == 200
    assert ldns_in(page) == [ldn(i) for i in expected]


@pytest_twisted.ensureDeferred
async def test_the_list_pages_through_every_meter_once(site: Site) -> None:
    await seed(site)
    for i in range(6, 60):
        await site.store.meters.add(NewMeter(ldn(i)))
    viewer = await site.signed_in("vera")
    seen: list[str] = []
    path = "/meters?size=25&sort=pdr&dir=desc"
    while path:
        code, _, page = await viewer.get(path)
        assert code == 200
        seen += ldns_in(page)
        found = re.search(r'<a href="([^"]+)" rel="next">', page)
        path = found.group(1).replace("&amp;", "&") if found else ""
    assert sorted(seen) == [ldn(i) for i in range(60)] and len(seen) == 60
    code, _, page = await viewer.get("/meters?sort=pdr&after=%7Bbroken")
    assert code == 400 and "first page" in page


@pytest_twisted.ensureDeferred
async def test_values_are_escaped_everywhere(site: Site) -> None:
    # (an LDN cannot hold markup any more: the PDR, which the store takes as given, does)
    await site.store.meters.add(NewMeter("FIO0000000000666", pdr="<script>alert(1)"))
    viewer = await site.signed_in("vera")
    _, _, page = await viewer.get("/meters")
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page


# --- add a meter ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_adding_a_meter_stores_it_with_its_keys(site: Site) -> None:
    operator = await site.signed_in("otto")
    await operator.get("/meters/new")
    code, heads, _ = await operator.post(
        "/meters/new",
        {
            "ldn": "FIO0000099999999",
            "pdr": "12345678901234",
            "system_title": "2F 19 00 00 00 05 F5 E0",
            "profile": "fiorentini",
            "ek": EK,
            "ak": "",
            "address": "",
            "allowed_ips": "192.0.2.7, 2001:db8::1",
        },
    )
    assert code == 303 and heads["location"] == "/meters/FIO0000099999999?added=1"
    meter = await site.store.meters.get("FIO0000099999999")
    assert meter is not None and meter.profile == "fiorentini"
    assert meter.system_title == bytes.fromhex("2F190000 0005F5E0".replace(" ", ""))
    assert meter.allowed_ips == ("192.0.2.7", "2001:db8::1")
    keys = await site.store.keys.get("FIO0000099999999", 1)
    assert keys is not None and keys.ek == bytes.fromhex(EK) and keys.ak == keys.ek
    code, _, page = await operator.get("/meters/FIO0000099999999?added=1")
    assert "added with its keys" in page and EK not in page and EK.lower() not in page
    audit = await site.store.audit.log()
    assert any(e.actor == "otto" and e.target == "FIO0000099999999" for e in audit)


@pytest_twisted.ensureDeferred
async def test_every_bad_field_is_shown_next_to_it_and_nothing_is_stored(site: Site) -> None:
    operator = await site.signed_in("otto")
    await operator.get("/meters/new")
    code, _, page = await operator.post(
        "/meters/new",
        {
            "ldn": "SHORT",
            "pdr": "12ab",
            "system_title": "XYZ",
            "profile": "no-such-profile",
            "ek": "1234",
            "ak": "zz",
            "address": "nohost",
            "allowed_ips": "192.0.2.300",
            "poll_minutes": "0",
        },
    )
    assert code == 400 and "Please correct the fields" in page
    for field in (
        "ldn",
        "pdr",
        "system_title",
        "profile",
        "ek",
        "ak",
        "address",
        "allowed_ips",
        "poll_minutes",
    ):
        assert f'id="e-{field}"' in page, field
    assert 'value="SHORT"' in page and 'value="12ab"' in page  # what was typed stays
    assert "1234" not in page.split('id="f-ek"')[1].split(">")[0]  # but never a key
    assert await site.store.meters.count() == 0


@pytest_twisted.ensureDeferred
async def test_a_taken_ldn_or_system_title_is_named(site: Site) -> None:
    await seed(site, 1)
    operator = await site.signed_in("otto")
    await operator.get("/meters/new")
    form = {"ldn": ldn(0), "system_title": "2F19000000000009", "profile": "fiorentini", "ek": EK}
    code, _, page = await operator.post("/meters/new", form)
    assert code == 409 and "A meter with this LDN exists already." in page
    form = {"ldn": ldn(7), "system_title": "2F19000000000000", "profile": "fiorentini", "ek": EK}
    code, _, page = await operator.post("/meters/new", form)
    assert code == 409 and "Another meter has this system title." in page
    assert await site.store.keys.get(ldn(7), 1) is None


# --- import keys ----------------------------------------------------------------------------


def csv_body(lines: list[str], csrf: str) -> dict[str, object]:
    """A multipart upload as a browser sends it (StubTreq takes no files: built by hand)."""
    boundary = "sac-test-boundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in (("csrf", csrf), ("step", "preview"), ("filename", "keys.csv"))
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="keys.csv"\r\n'
        "Content-Type: text/csv\r\n\r\n" + "\n".join(lines) + f"\r\n--{boundary}--\r\n"
    )
    return {
        "data": "".join(parts).encode(),
        "headers": {"Content-Type": f"multipart/form-data; boundary={boundary}"},
    }


@pytest_twisted.ensureDeferred
async def test_a_csv_with_bad_lines_lists_them_and_imports_nothing(site: Site) -> None:
    await seed(site, 3)
    operator = await site.signed_in("otto")
    await operator.get("/meters/import")
    lines = ["ldn,client,ek,ak", f"{ldn(0)},1,{EK},", f"{ldn(1)},1,00112233,", f"{ldn(2)},x,{EK},"]
    code, _, page = await operator.request(
        "POST", "/meters/import", **csv_body(lines, operator.csrf)
    )
    assert code == 422 and "2 of 3 lines cannot be imported" in page
    # each refused line with its reason (the reason column was empty until issue 9's review)
    assert '<td class="num">3</td><td>EK has 4 bytes, not 16 (32 hex digits)</td>' in page
    assert '<td class="num">4</td><td>client is not a number</td>' in page
    assert await site.store.keys.get(ldn(0), 1) is None


@pytest_twisted.ensureDeferred
async def test_a_good_csv_is_previewed_then_imported_all_at_once(site: Site) -> None:
    await seed(site, 3)
    operator = await site.signed_in("otto")
    await operator.get("/meters/import")
    lines = ["ldn,client,ek,ak"] + [f"{ldn(i)},1,{EK},{EK}" for i in range(3)]
    code, _, page = await operator.request(
        "POST", "/meters/import", **csv_body(lines, operator.csrf)
    )
    assert code == 200 and "<strong>3</strong> keys" in page and EK not in page
    upload = re.search(r'name="upload" value="([^"]+)"', page).group(1)
    assert await site.store.keys.get(ldn(0), 1) is None  # nothing before the go
    other = await site.signed_in("ada")  # another session cannot import it
    await other.get("/meters/import")
    code, _, _ = await other.post("/meters/import", {"step": "confirm", "upload": upload})
    assert code == 400
    code, _, page = await operator.post("/meters/import", {"step": "confirm", "upload": upload})
    assert code == 200 and "3 keys imported" in page
    for i in range(3):
        assert (await site.store.keys.get(ldn(i), 1)).ek == bytes.fromhex(EK)
    code, _, _ = await operator.post("/meters/import", {"step": "confirm", "upload": upload})
    assert code == 400  # used once


@pytest_twisted.ensureDeferred
async def test_keys_for_unknown_meters_are_refused_by_line(site: Site) -> None:
    await seed(site, 1)
    operator = await site.signed_in("otto")
    await operator.get("/meters/import")
    lines = ["ldn,client,ek,ak", f"{ldn(0)},1,{EK},", f"{ldn(9)},1,{EK},"]
    _, _, page = await operator.request("POST", "/meters/import", **csv_body(lines, operator.csrf))
    upload = re.search(r'name="upload" value="([^"]+)"', page).group(1)
    code, _, page = await operator.post("/meters/import", {"step": "confirm", "upload": upload})
    assert code == 409 and "Nothing was imported" in page
    assert re.search(r'<td class="num">3</td><td>[^<]*\S[^<]*</td>', page)  # with its reason
    assert await site.store.keys.get(ldn(0), 1) is None


# --- a meter and its valve ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_the_detail_page_draws_the_history(site: Site) -> None:
    await site.store.meters.add(NewMeter(ldn(0), pdr="00000000000000"))
    now = dt.datetime.now(dt.UTC).replace(hour=10, minute=0, second=0, microsecond=0)
    days = [now - dt.timedelta(days=d) for d in range(10, 0, -1)]
    readings = [
        Reading(ldn(0), INDEX, 2, 1_000_000 + 1500 * k, t, "cf47", t, -3, 14)
        for k, t in enumerate(days)
    ]
    await site.store.readings.ingest(
        Ingest(
            readings=readings,
            events=[
                Event(ldn(0), LOGBOOK, 114, days[3], days[3], "poll", 7),
                Event(ldn(0), LOGBOOK, 12, days[4], days[4], "poll", 8),
                Event(ldn(0), LOGBOOK, 77, days[5], days[5], "poll", 9),
            ],
        )
    )
    viewer = await site.signed_in("vera")
    code, _, page = await viewer.get(f"/meters/{ldn(0)}?range=30d")
    assert code == 200
    assert '<svg class="chart"' in page and "<polyline" in page
    assert page.count('<rect class="bar"') == 9  # 10 days of index: 9 days of consumption
    assert "1.500" in page  # a day's consumption, in Sm³
    # the events in words, classed; an unknown code said so, never dropped
    events = page[page.index('id="events"') :]
    assert ">114<" in events and ">valve cannot open or close<" in events
    assert '<span class="severity alarm">alarm</span> valve' in events
    assert ">clock synchronised<" in events and '<tr class="event-info">' in events
    assert ">unknown (code 77)<" in events and ">event logbook<" in events
    code, _, page = await viewer.get("/meters/FIO9999999999999")
    assert code == 404 and "Traceback" not in page


@pytest_twisted.ensureDeferred
async def test_a_valve_command_is_confirmed_then_queued_and_followed(site: Site) -> None:
    await seed(site, 1)
    operator = await site.signed_in("otto")
    code, _, page = await operator.get(f"/meters/{ldn(0)}/valve?action=close")
    assert code == 200 and ldn(0) in page and f"{0:014d}" in page and "Close the valve" in page
    code, _, _ = await operator.post(
        f"/meters/{ldn(0)}/valve", {"action": "close", "confirm": ldn(1)}
    )
    assert code == 400  # the confirmation names another meter
    code, heads, _ = await operator.post(
        f"/meters/{ldn(0)}/valve", {"action": "close", "confirm": ldn(0)}
    )
    [command] = await site.store.commands.recent(ldn(0))
    assert code == 303 and heads["location"] == f"/meters/{ldn(0)}?queued={command.id}#commands"
    assert command.kind == "valve-close" and command.requested_by == "otto"
    code, heads, body = await operator.get(f"/commands/{command.id}.json")
    assert code == 200 and heads["content-type"] == "application/json"
    assert '"state": "pending"' in body and '"final": false' in body
    await site.store.commands.claim(ldn(0))
    await site.store.commands.finish(command.id, True, "control_state=0")
    _, _, body = await operator.get(f"/commands/{command.id}.json")
    assert '"state": "done"' in body and '"final": true' in body
    _, _, page = await operator.get(f"/meters/{ldn(0)}")
    assert "s-done" in page and "valve-close" in page


@pytest_twisted.ensureDeferred
async def test_an_admin_resets_a_meters_counters_after_a_key_change_in_the_field(
    site: Site,
) -> None:
    await seed(site, 1)
    await site.store.keys.set(ldn(0), 1, bytes(16))
    await site.store.counters.reserve(ldn(0), 1, 64)
    await site.store.counters.prove(ldn(0), 1, 40)
    operator = await site.signed_in("otto")
    _, _, page = await operator.get(f"/meters/{ldn(0)}")
    assert "Ciphering counters" not in page  # for admins only
    admin = await site.signed_in("ada")
    _, _, page = await admin.get(f"/meters/{ldn(0)}")
    assert 'id="counters"' in page and ">64<" in page and ">40<" in page
    code, _, _ = await admin.post(f"/meters/{ldn(0)}/counters/reset", {"confirm": ldn(1)})
    assert code == 400  # the confirmation names another meter
    assert (await site.store.counters.state(ldn(0), 1)).ours == 64
    code, heads, _ = await admin.post(f"/meters/{ldn(0)}/counters/reset", {"confirm": ldn(0)})
    assert code == 303 and heads["location"] == f"/meters/{ldn(0)}?counters=reset#counters"
    assert (await site.store.counters.state(ldn(0), 1)).ours == 0
    _, _, page = await admin.get(heads["location"])
    assert "The counters were reset" in page
    [line, *_] = await site.store.audit.log()
    assert (line.actor, line.action, line.target) == ("ada", "reset counters", ldn(0))


# --- status, metrics, errors ----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_status_and_metrics(site: Site) -> None:
    await seed(site)
    site.web.metrics.count("sac_push_rejected_total", 3, reason="bad-tag")
    site.web.metrics.count("sac_push_stored_total", 12)
    site.web.metrics.gauge("sac_spool_depth", lambda: 4)
    site.web.health["push listener"] = lambda: (True, "tcp:4059")
    site.web.health["poller"] = lambda: (False, "store unreachable")
    viewer = await site.signed_in("vera")
    code, _, page = await viewer.get("/status")
    assert code == 200
    assert re.search(r'id="sessions-hour">1<', page)  # meter 0 connected just now
    assert "bad-tag" in page and 'id="spool-depth">4<' in page and "DOWN" in page
    code, heads, text = await site.browser().get("/metrics")
    assert code == 200 and heads["content-type"].startswith("text/plain; version=0.0.4")
    assert 'sac_push_rejected_total{reason="bad-tag"} 3' in text and "sac_spool_depth 4" in text


@pytest_twisted.ensureDeferred
async def test_an_unexpected_error_is_a_plain_page_with_an_incident(site: Site) -> None:
    async def broken(*args: object, **kw: object) -> None:
        raise RuntimeError("the disk is on fire")

    viewer = await site.signed_in("vera")
    site.store.meters.page = broken  # type: ignore[method-assign]
    code, _, page = await viewer.get("/meters")
    assert code == 500 and "incident" in page
    assert "Traceback" not in page and "on fire" not in page and "RuntimeError" not in page
    code, _, page = await viewer.get("/no/such/page")
    assert code == 404 and "Not found" in page


@pytest_twisted.ensureDeferred
async def test_security_headers_on_every_page(site: Site) -> None:
    browser = site.browser()
    _, heads, _ = await browser.get("/login")
    assert heads["content-security-policy"].startswith("default-src 'self'")
    assert heads["x-frame-options"] == "DENY" and heads["x-content-type-options"] == "nosniff"
