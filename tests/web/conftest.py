"""The web application over treq's StubTreq: real Klein routing, real templates, a real
store (SQLite, and PostgreSQL where a test asks for both), no network."""

from __future__ import annotations

import re
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from sac.passwords import ScryptParams
from sac.profiles import discover_profiles
from sac.services.metrics import Metrics
from sac.store import Role
from sac.store.connector import Store
from sac.web.app import Web, WebSettings
from tests.store.conftest import Backend, backend, postgres  # noqa: F401 -- fixtures

REGISTRY = discover_profiles().registry
FAST = ScryptParams(log2_n=8)
PASSWORD = "correct horse battery"
BASE = "http://sac.test"


class Browser:
    """One user's client: keeps cookies, pumps StubTreq until the answer is complete."""

    def __init__(self, web: Web) -> None:
        self.stub = StubTreq(web.resource())
        self.cookies: dict[str, str] = {}
        self.csrf = ""

    async def request(self, method: str, path: str, **kw: Any) -> tuple[int, dict[str, str], str]:
        headers = kw.pop("headers", {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        response = await self._pumped(
            self.stub.request(method, BASE + path, headers=headers, allow_redirects=False, **kw)
        )
        text = (await self._pumped(self.stub.content(response))).decode()
        for value in response.headers.getRawHeaders("set-cookie", []):
            jar = SimpleCookie()
            jar.load(value)
            for name, morsel in jar.items():
                if morsel.value == "" or morsel["max-age"] == "0":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        found = re.search(r'name="csrf" value="([^"]+)"', text)
        if found:
            self.csrf = found.group(1)
        heads = {k.decode().lower(): v[0].decode() for k, v in response.headers.getAllRawHeaders()}
        heads["set-cookie"] = " | ".join(response.headers.getRawHeaders("set-cookie", []))
        return response.code, heads, text

    async def _pumped(self, d: Deferred[Any]) -> Any:
        """Flush StubTreq's fake connection until ``d`` has its result (the store answers
        through the real reactor, so the answer may come after a few turns)."""
        done: list[Any] = []
        d.addBoth(lambda result: done.append(True) or result)
        while not done:
            self.stub.flush()
            await deferLater(reactor, 0.001, lambda: None)
        return await d

    async def get(self, path: str) -> tuple[int, dict[str, str], str]:
        return await self.request("GET", path)

    async def post(
        self, path: str, data: dict[str, str] | None = None, csrf: bool = True, **kw: Any
    ):
        form = dict(data or {})
        if csrf and "csrf" not in form:
            form["csrf"] = self.csrf
        return await self.request("POST", path, data=form, **kw)

    async def sign_in(self, name: str, password: str = PASSWORD) -> tuple[int, dict[str, str], str]:
        await self.get("/login")
        return await self.post("/login", {"username": name, "password": password})


class Site:
    def __init__(self, store: Store, web: Web) -> None:
        self.store = store
        self.web = web

    def browser(self) -> Browser:
        return Browser(self.web)

    async def signed_in(self, name: str) -> Browser:
        browser = self.browser()
        code, heads, _ = await browser.sign_in(name)
        assert code == 303, heads
        await browser.get("/meters")  # the session's CSRF token, as any page carries it
        return browser


async def make_site(backend: Backend, **settings: Any) -> Site:  # noqa: F811
    store = backend.make(password_params=FAST)
    await store.open()
    for name, role in (("vera", Role.VIEWER), ("otto", Role.OPERATOR), ("ada", Role.ADMIN)):
        await store.users.add(name, PASSWORD, role)
    web = Web(
        store,
        REGISTRY,
        metrics=Metrics(),
        settings=WebSettings(secure_cookies=False, **settings),
    )
    return Site(store, web)


@pytest.fixture
def sqlite(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Backend]:
    made = Backend("sqlite", tmp_path, request)
    yield made
    made.close_all()


def run(coro: Any) -> Any:
    return pytest_twisted.blockon(Deferred.fromCoroutine(coro))
