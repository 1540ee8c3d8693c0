"""Signing in under attack, over real HTTP on loopback (clients bound to their own 127.0.0.x:
the address is the TCP peer's): a burst of guesses sent in parallel gets no more password
checks than the limits allow and no answer that tells the right password; a wrong password,
an unknown name and a locked user get one answer; after sign-in only a path of this site is
followed; a session ends at its absolute lifetime however much it is used; a user demoted
or disabled loses its rights over SOAP at the next call."""

from __future__ import annotations

import base64
import datetime as dt
import html
import re
from collections import Counter
from typing import Any
from urllib.parse import urlencode

import pytest
import pytest_twisted
from treq.client import HTTPClient
from twisted.internet import defer, reactor
from twisted.web.client import Agent

from sac.passwords import DEFAULT
from sac.store import Role
from sac.web.app import Web, WebSettings
from tests.promtext import metric
from tests.store.conftest import Backend
from tests.store.test_operations import Clock
from tests.web.conftest import FAST, PASSWORD, REGISTRY, Site, make_site
from tests.web.test_access import soap_envelope

USERS = ("vera", "otto", "ada")
# the audit details of a sign-in whose password was not checked (a decoy hash was)
DECOYS = {"no active user of this name", "locked out: password not checked"}
CHECKS = ("sign-in", "sign-in failed")


class Client:
    """HTTP from one loopback address, a connection per request (as many in parallel as
    asked), with the sign-in form's cookie and token once fetched."""

    def __init__(self, address: str, base: str) -> None:
        self.http = HTTPClient(Agent(reactor, bindAddress=(address, 0)))
        self.base = base
        self.form: tuple[str, str] | None = None

    async def get(self, path: str, cookie: str = "") -> tuple[int, dict[str, str], str]:
        answer = await self.http.get(
            self.base + path, headers={"Cookie": cookie} if cookie else {}, allow_redirects=False
        )
        return answer.code, _heads(answer), await answer.text()

    async def login_form(self, path: str = "/login") -> tuple[str, str]:
        answer = await self.http.get(self.base + path)
        page = await answer.text()
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        cookie = answer.headers.getRawHeaders("set-cookie")[0].split(";")[0]
        self.form = cookie, csrf
        return self.form

    async def sign_in(
        self, name: str, password: str, next: str = "/meters"
    ) -> tuple[int, dict[str, str], str]:
        cookie, csrf = self.form or await self.login_form()
        answer = await self.http.post(
            f"{self.base}/login",
            data={"username": name, "password": password, "csrf": csrf, "next": next},
            headers={"Cookie": cookie},
            allow_redirects=False,
        )
        return answer.code, _heads(answer), await answer.text()

    async def soap(self, name: str, password: str, operation: str = "ListMeters") -> str:
        basic = base64.b64encode(f"{name}:{password}".encode()).decode()
        answer = await self.http.post(
            f"{self.base}/soap",
            data=soap_envelope(operation).encode(),
            headers={"Content-Type": "text/xml; charset=utf-8", "Authorization": f"Basic {basic}"},
        )
        return await answer.text()


def _heads(answer: Any) -> dict[str, str]:
    heads = {k.decode().lower(): v[0].decode() for k, v in answer.headers.getAllRawHeaders()}
    heads["set-cookie"] = " | ".join(answer.headers.getRawHeaders("set-cookie", []))
    return heads


def page_error(page: str) -> str:
    found = re.search(r'<p class="error" role="alert">([^<]*)</p>', page)
    return found.group(1) if found else ""


def fault(text: str) -> str:
    """A SOAP answer as its fault code and string, digits blurred (a wait in seconds)."""
    code = re.search(r"<faultcode>([^<]*)</faultcode>", text)
    string = re.search(r"<faultstring>([^<]*)</faultstring>", text)
    if code is None or string is None:
        return "answer" if "ListMetersResponse" in text else text[:200]
    return f"{code.group(1).rpartition(':')[2]}: {re.sub(r'[0-9]+', 'N', string.group(1))}"


class Listening:
    def __init__(self, web: Web) -> None:
        self.port = reactor.listenTCP(0, web.site(), interface="127.0.0.1", backlog=512)
        self.base = f"http://127.0.0.1:{self.port.getHost().port}"

    async def close(self) -> None:
        await self.port.stopListening()


async def real_scrypt_site(backend: Backend, **settings: Any) -> Site:
    """The site with the product's scrypt cost (a check takes tens of milliseconds), as an
    attacker meets it: the burst arrives while the first checks still run."""
    store = backend.make(password_params=DEFAULT)
    await store.open()
    for name, role in zip(USERS, (Role.VIEWER, Role.OPERATOR, Role.ADMIN), strict=True):
        await store.users.add(name, PASSWORD, role)
    web = Web(store, REGISTRY, settings=WebSettings(secure_cookies=False, **settings))
    return Site(store, web)


@pytest.mark.parametrize("at_once", [4, 1000], ids=["4-checks-at-once", "no-cap"])
@pytest.mark.parametrize("via", ["login", "soap"])
@pytest_twisted.ensureDeferred
async def test_a_parallel_burst_gets_no_more_checks_than_the_limits(
    backend: Backend, via: str, at_once: int
) -> None:
    """300 guesses sent at once from one address, over three users and unknown names, the
    right password of each user among them: at most 5 password checks per user and 20 from
    the address (the audit trail, one line per check; the product's own count on /metrics),
    and no answer but a successful sign-in tells a right password from a wrong one.  With
    the default cap of password checks at once the cap refuses most (busy); without it,
    the address's and the users' reservations do."""
    site = await real_scrypt_site(backend, password_checks=at_once)
    listening = Listening(site.web)
    try:
        attacker = Client("127.0.0.2", listening.base)
        guesses = []
        for i in range(300):
            name = [*USERS, f"nobody{i}"][i % 4]
            right = i in (150 - 2, 200 - 3, 250 - 4)  # vera, otto, ada: late in the burst
            guesses.append((name, PASSWORD if right else f"guess number {i}", right))
        if via == "login":
            await attacker.login_form()

            async def guess(name: str, password: str) -> tuple[str, ...]:
                code, heads, page = await attacker.sign_in(name, password)
                if code == 303:
                    return ("signed in", heads["location"])
                return (str(code), page_error(page), heads.get("retry-after", ""))

            refusals = {
                ("403", "Wrong user name or password.", ""),
                ("429", "The SAC is busy signing others in; try again in a moment.", "1"),
            }
            refused_address = re.compile(r"429,Too many failed sign-ins from your address.*")
        else:

            async def guess(name: str, password: str) -> tuple[str, ...]:
                return (fault(await attacker.soap(name, password)),)

            refusals = {
                ("Client.Authentication: wrong user name or password",),
                (
                    "Server.Busy: the SAC is checking too many sign-ins at once; try again in a"
                    " moment",
                ),
            }
            refused_address = re.compile(
                r"Client.Authentication: too many failed sign-ins from this address; try again"
                r" in N s"
            )
        answers = await defer.gatherResults(
            [defer.Deferred.fromCoroutine(guess(name, password)) for name, password, _ in guesses]
        )
        audit = await site.store.audit.log(limit=10_000)
        checks = [e for e in audit if e.action in CHECKS]
        real = Counter(e.actor for e in checks if e.detail not in DECOYS)
        assert all(count <= 5 for count in real.values()), real
        assert all(e.address == "127.0.0.2" for e in checks) and len(checks) <= 20, Counter(
            (e.actor, e.detail) for e in checks
        )
        code, _, text = await Client("127.0.0.3", listening.base).get("/metrics")
        assert code == 200 and metric(text, "sac_password_checks_total") == len(checks)
        assert metric(text, "sac_sign_in_refused_total") + metric(
            text, "sac_sign_in_busy_total"
        ) == 300 - len(checks)
        kinds: Counter[str] = Counter()
        for (name, _, right), answer in zip(guesses, answers, strict=True):
            if answer[0] in ("signed in", "answer"):  # a right password, checked in time
                assert right and answer in (("signed in", "/meters"), ("answer",))
                assert any(e.actor == name and e.action == "sign-in" for e in checks)
                kinds["signed in"] += 1
            elif answer in refusals:
                kinds["busy" if "busy" in ",".join(answer).lower() else "wrong"] += 1
            else:  # whatever the password, once the address has used its allowance
                assert refused_address.fullmatch(",".join(answer)), (name, right, answer)
                kinds["address"] += 1
        assert kinds["address" if at_once > 300 else "busy"] > 200, kinds  # what stopped it
    finally:
        await listening.close()


@pytest.fixture
def site(backend: Backend) -> Site:
    return pytest_twisted.blockon(defer.Deferred.fromCoroutine(make_site(backend)))


@pytest_twisted.ensureDeferred
async def test_a_wrong_password_an_unknown_name_and_a_locked_user_get_one_answer(
    site: Site,
) -> None:
    """No user enumeration: the same status, the same page or fault, and one password check
    each (the product's count; the decoy hash for the unknown, the locked and the disabled
    user), whatever the reason."""
    await site.store.users.add("dora", "dora's long password", Role.VIEWER)
    await site.store.users.update("dora", active=False)
    listening = Listening(site.web)
    try:
        locker = Client("127.0.0.4", listening.base)
        for i in range(5):
            code, _, _ = await locker.sign_in("vera", f"wrong {i}")
            assert code == 403
        assert (await site.store.users.get("vera")).locked_until is not None
        client = Client("127.0.0.2", listening.base)
        observer = Client("127.0.0.3", listening.base)
        cases = [
            ("otto", "not otto's password"),  # a wrong password
            ("nobody", PASSWORD),  # an unknown name
            ("vera", "not vera's password"),  # locked out, wrong password
            ("vera", PASSWORD),  # locked out, the right password
            ("dora", "dora's long password"),  # disabled, the right password
        ]

        async def checks() -> int:
            return metric((await observer.get("/metrics"))[2], "sac_password_checks_total")

        pages, faults, costs = set(), set(), []
        for name, password in cases:
            before = await checks()
            code, heads, page = await client.sign_in(name, password)
            page = re.sub(r'name="csrf" value="[^"]+"', "", page).replace(f'"{name}"', '"NAME"')
            pages.add((code, heads.get("retry-after"), page))
            middle = await checks()
            faults.add(fault(await client.soap(name, password)))
            costs.append((middle - before, await checks() - middle))
        assert len(pages) == 1, [page_error(p) for _, _, p in pages]
        [(code, _, page)] = pages
        assert code == 403 and page_error(page) == "Wrong user name or password."
        assert faults == {"Client.Authentication: wrong user name or password"}
        assert costs == [(1, 1)] * len(cases)  # one scrypt check each, no more, no less
    finally:
        await listening.close()


@pytest_twisted.ensureDeferred
async def test_soap_reads_the_role_and_activity_on_every_call(site: Site) -> None:
    """Only the password check is remembered: a demoted operator loses the valve at its next
    call, a disabled user or a changed password is refused at once."""
    listening = Listening(site.web)
    try:
        erp = Client("127.0.0.2", listening.base)
        # an operator may ask for the valve (the meter does not exist: the role did pass)
        assert fault(await erp.soap("otto", PASSWORD, "RequestValve")).startswith(
            "Client.UnknownMeter"
        )
        await site.store.users.update("otto", role=Role.VIEWER)
        assert fault(await erp.soap("otto", PASSWORD, "RequestValve")) == (
            "Client.Forbidden: this operation needs the operator role"
        )
        assert fault(await erp.soap("otto", PASSWORD)) == "answer"  # a viewer still reads
        await site.store.users.update("otto", active=False)
        assert fault(await erp.soap("otto", PASSWORD)) == (
            "Client.Authentication: wrong user name or password"
        )
        await site.store.users.update("otto", active=True, password="a new long password")
        assert fault(await erp.soap("otto", PASSWORD)) == (
            "Client.Authentication: wrong user name or password"
        )
        assert fault(await erp.soap("otto", "a new long password")) == "answer"
    finally:
        await listening.close()


HOSTILE_NEXT = [
    "//evil.example/",
    "///evil.example/",
    "/\\evil.example/",
    "\\\\evil.example/",
    "\\/evil.example/",
    "/\\/evil.example/",
    "/\t/evil.example/",  # Chromium drops the tab: //evil.example
    "/\n/evil.example/",
    "/\r\n/evil.example/",
    "/\x00/evil.example/",
    "/%09/evil.example/",  # decoded once more by someone: the tab again
    "/%2F/evil.example/",
    "/%2f%2fevil.example/",
    "/%5Cevil.example/",
    "/%0d%0aSet-Cookie:%20x=1",
    "/ /evil.example/",
    "/meters/../..//evil.example/",
    "/%2e%2e/%2e%2e//evil.example/",
    "/\u2215\u2215evil.example/",  # division slashes
    "/\uff0f/evil.example/",  # a fullwidth solidus
    "https://evil.example/",
    "http:evil.example",
    "javascript:alert(1)",
    "evil.example",
    "//evil.example@sac.test/",
    '/meters"><script>alert(1)</script>',
    "/" + "a" * 3000,
]
SAFE_NEXT = [
    "/meters?sort=pdr",
    "/meters?q=a%20b&dir=desc",
    "/meters/SIM0000000000001#commands",
    "/admin/audit",
]


@pytest_twisted.ensureDeferred
async def test_after_sign_in_only_a_path_of_this_site_is_followed(site: Site) -> None:
    """No open redirect: each hostile ``next`` (another host in some browser's reading, or
    a header injection) sends the signed-in user to the meter list instead, both in the
    form's hidden field and in the redirect; paths of this site are kept."""
    listening = Listening(site.web)
    try:
        browser = Client("127.0.0.2", listening.base)
        for target in HOSTILE_NEXT + SAFE_NEXT:
            want = target if target in SAFE_NEXT else "/meters"
            await browser.login_form("/login?" + urlencode({"next": target}))
            _, _, form = await browser.get("/login?" + urlencode({"next": target}))
            shown = re.search(r'name="next" value="([^"]*)"', form).group(1)
            assert html.unescape(shown) == want, target
            code, heads, _ = await browser.sign_in("vera", PASSWORD, next=target)
            assert code == 303 and heads["location"] == want, (target, heads.get("location"))
    finally:
        await listening.close()


@pytest_twisted.ensureDeferred
async def test_a_session_ends_at_its_lifetime_however_much_it_is_used(backend: Backend) -> None:
    """A session slides while in use ([web] session_hours, 8) but never beyond its lifetime
    from the sign-in ([web] session_max_hours, 12): a browser used every hour signs in
    again after 12 hours."""
    clock = Clock()
    store = backend.make(password_params=FAST, clock=clock)
    await store.open()
    await store.users.add("vera", PASSWORD, Role.VIEWER)
    web = Web(store, REGISTRY, settings=WebSettings(secure_cookies=False), now=clock)
    assert web.settings.session_lifetime == dt.timedelta(hours=12)
    listening = Listening(web)
    try:
        browser = Client("127.0.0.2", listening.base)
        code, heads, _ = await browser.sign_in("vera", PASSWORD)
        assert code == 303
        cookie = heads["set-cookie"].split(";")[0]
        assert cookie.startswith("sac_session=")
        for hour in range(1, 12):
            clock.advance(hours=1)
            code, _, _ = await browser.get("/meters", cookie)
            assert code == 200, f"signed out after {hour} hours"
        clock.advance(minutes=59)
        assert (await browser.get("/meters", cookie))[0] == 200
        clock.advance(minutes=1)  # 12 hours since the sign-in
        code, heads, _ = await browser.get("/meters", cookie)
        assert code == 303 and heads["location"].startswith("/login"), code
        assert await store.sessions.get(cookie.partition("=")[2]) is None
    finally:
        await listening.close()
