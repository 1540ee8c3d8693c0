"""Brute force: one address guessing passwords is refused after 20 failed sign-ins in 10
minutes -- on the sign-in page and in SOAP alike, before any password is looked at -- while
other addresses sign in as usual.  (The store's own lock-out of one user after 5 failures in
a row is in test_pages.py and tests/store.)  Real HTTP on 127.0.0.1, clients bound to
127.0.0.2 and 127.0.0.3: the address is the TCP peer's."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
import pytest_twisted
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.web.client import Agent
from twisted.web.server import Site as WebSite

from sac.web.throttle import SignInThrottle
from tests.store.conftest import Backend
from tests.web.conftest import PASSWORD, Site, make_site, run
from tests.web.test_access import soap_envelope


@pytest.fixture
def site(backend: Backend) -> Site:
    return run(make_site(backend))


class From:
    """HTTP from one loopback address, with the sign-in form's cookie."""

    def __init__(self, address: str, base: str) -> None:
        self.http = HTTPClient(Agent(reactor, bindAddress=(address, 0)))
        self.base = base

    async def sign_in(self, name: str, password: str) -> tuple[int, dict[str, Any], str]:
        form = await self.http.get(f"{self.base}/login")
        page = await form.text()
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        cookie = form.headers.getRawHeaders("set-cookie")[0].split(";")[0]
        answer = await self.http.post(
            f"{self.base}/login",
            data={"username": name, "password": password, "csrf": csrf, "next": "/meters"},
            headers={"Cookie": cookie},
            allow_redirects=False,
        )
        heads = {k.decode().lower(): v[0].decode() for k, v in answer.headers.getAllRawHeaders()}
        return answer.code, heads, await answer.text()

    async def soap(self, name: str, password: str) -> str:
        basic = base64.b64encode(f"{name}:{password}".encode()).decode()
        answer = await self.http.post(
            f"{self.base}/soap",
            data=soap_envelope("ListMeters").encode(),
            headers={"Content-Type": "text/xml; charset=utf-8", "Authorization": f"Basic {basic}"},
        )
        return await answer.text()


@pytest_twisted.ensureDeferred
async def test_an_address_guessing_passwords_is_refused_and_others_are_not(site: Site) -> None:
    port = reactor.listenTCP(0, WebSite(site.web.resource()), interface="127.0.0.1")
    base = f"http://127.0.0.1:{port.getHost().port}"
    try:
        guesser, other = From("127.0.0.2", base), From("127.0.0.3", base)
        # spraying: a few guesses at each of many names (no user reaches the store's lock-out)
        for i in range(20):
            name = ["vera", "otto", "ada"][i % 3] if i < 9 else f"someone{i}"
            code, _, page = await guesser.sign_in(name, f"guess {i}")
            assert code == 403 and "Wrong user name or password" in page, page[-900:]
        failed = [e for e in await site.store.audit.log() if e.action == "sign-in failed"]
        assert len(failed) == 20
        # the 21st, even with the right password, is refused before the password is checked
        code, heads, page = await guesser.sign_in("vera", PASSWORD)
        assert code == 429 and "Too many failed sign-ins from your address" in page
        assert 500 < int(heads["retry-after"]) <= 600
        assert "does not exist" not in await guesser.soap("vera", PASSWORD)
        assert "too many failed sign-ins from this address" in await guesser.soap("vera", PASSWORD)
        audited = await site.store.audit.log()
        assert len([e for e in audited if e.action == "sign-in failed"]) == 20
        assert not [e for e in audited if e.action == "sign-in"]
        assert site.web.metrics.value("sac_sign_in_refused_total") == 3
        # another address is not concerned
        code, heads, _ = await other.sign_in("vera", PASSWORD)
        assert code == 303 and heads["location"] == "/meters"
        # ten minutes on, the guesser may try again
        clock = site.web.sign_ins.clock
        site.web.sign_ins.clock = lambda: clock() + 601
        code, _, _ = await guesser.sign_in("vera", PASSWORD)
        assert code == 303
    finally:
        await port.stopListening()


def test_the_throttle_counts_a_sliding_window() -> None:
    now = [0.0]
    throttle = SignInThrottle(allowed=3, window=60, clock=lambda: now[0])
    for t in (0, 10, 20):
        now[0] = t
        assert throttle.wait("a") == 0
        throttle.failed("a")
    now[0] = 30
    assert throttle.wait("a") == 30 and throttle.wait("b") == 0  # until the first leaves
    now[0] = 60
    assert throttle.wait("a") == 0  # one try back
    throttle.failed("a")
    assert throttle.wait("a") == 10  # and refused until the second leaves
    assert throttle.refusals == 2


def test_the_throttle_holds_a_bounded_number_of_addresses() -> None:
    throttle = SignInThrottle(allowed=2, window=60, clock=lambda: 0.0, max_addresses=100)
    for i in range(1000):
        throttle.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(throttle._failures) == 100


def test_no_limit_when_configured_so() -> None:
    throttle = SignInThrottle(allowed=0, window=60, clock=lambda: 0.0)
    for _ in range(1000):
        throttle.failed("a")
    assert throttle.wait("a") == 0 and not throttle._failures


def test_attempts_under_way_count_as_failures_until_they_end() -> None:
    """A burst arriving before any check has failed: the reservations fill the allowance."""
    throttle = SignInThrottle(allowed=3, window=60, clock=lambda: 0.0)
    assert [throttle.reserve("a") for _ in range(5)] == [0, 0, 0, 1, 1]
    assert throttle.reserve("b") == 0  # another address is not concerned
    throttle.release("a", failed=False)  # a right password: its place is free again
    assert throttle.reserve("a") == 0 and throttle.reserve("a") == 1
    for _ in range(3):
        throttle.release("a", failed=True)
    assert throttle.reserve("a") == 60  # three failures: the window's wait
    assert throttle.refusals == 4 and "a" not in throttle._running
