"""A change of a meter or of its keys reaches the push path at once: in the process that made
it (whatever made it: the store tells its watchers), and on PostgreSQL in the other
processes within moments (LISTEN/NOTIFY).  Before, the push path's 30 s cache kept the old
meter: a disabled meter's next push still ran its valve close, an old key still opened
pushes after a re-key."""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone

from sac.services.metrics import Metrics
from sac.store import Actor, CommandState, MeterState
from sac.store.connector import Store
from sac.web.app import Web, WebSettings
from tests.acquisition.conftest import (
    REGISTRY,
    Backend,
    Sac,
    make_fleet,
    provision,
    push_once,
    started,
)
from tests.acquisition.test_faults import push_bytes, rejected, send_raw
from tests.web.conftest import Browser

OPERATOR = Actor("otto")
NEW_KEY = bytes.fromhex("C0FFEE00C0FFEE00C0FFEE00C0FFEE01")


class Api:
    """The JSON API of a Web on ``store`` (the same store object as the push path's), with
    an operator's bearer token."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.browser = Browser(Web(store, REGISTRY, metrics=Metrics(), settings=WebSettings()))
        self.token = ""

    async def sign_up(self) -> Api:
        from sac.store import Role

        await self.store.users.add("otto", "correct horse battery", Role.OPERATOR)
        self.token, _ = await self.store.tokens.create("otto", "provisioning")
        return self

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"}
        kw: dict[str, Any] = {}
        if body is not None:
            headers["Content-Type"] = "application/json"
            kw["data"] = json.dumps(body).encode()
        code, _, text = await self.browser.request(method, path, headers=headers, **kw)
        return code, json.loads(text) if text else None


@pytest_twisted.ensureDeferred
async def test_a_meter_disabled_through_the_api_is_refused_at_its_very_next_push(
    backend: Backend, sacs: list[Sac]
) -> None:
    store, fleet, sac, port = await started(backend, sacs)
    [m] = fleet.meters
    api = await Api(store).sign_up()
    assert (await send_raw(port, push_bytes(m))).check(ConnectionDone)  # cached now
    close = await store.commands.queue(m.ldn, "valve-close", {}, OPERATOR)
    code, meter = await api.call("POST", f"/api/v1/meters/{m.ldn}/disable")
    assert code == 200 and meter["state"] == "disabled"
    assert not (await send_raw(port, push_bytes(m))).check(ConnectionDone)
    assert rejected(sac, "disabled") == 1
    assert (await store.commands.get(close.id)).state is CommandState.PENDING  # the valve
    assert m.valve_open
    # enabled again: its next push is taken (and the close runs)
    code, _ = await api.call("POST", f"/api/v1/meters/{m.ldn}/enable")
    assert code == 200
    assert (await push_once(port, m)).end_reason.check(ConnectionDone)  # the meter answers
    assert (await store.commands.get(close.id)).state is CommandState.DONE
    assert not m.valve_open


@pytest_twisted.ensureDeferred
async def test_after_a_rekey_through_the_api_the_old_key_is_refused_at_once(
    backend: Backend, sacs: list[Sac]
) -> None:
    store, fleet, sac, port = await started(backend, sacs)
    [m] = fleet.meters
    api = await Api(store).sign_up()
    assert (await send_raw(port, push_bytes(m))).check(ConnectionDone)  # cached now
    stored = await store.readings.count()
    code, _ = await api.call("PATCH", f"/api/v1/meters/{m.ldn}", {"ek": NEW_KEY.hex()})
    assert code == 200
    assert not (await send_raw(port, push_bytes(m))).check(ConnectionDone)  # the old key
    assert rejected(sac, "bad-tag") == 1
    assert await store.readings.count() == stored
    m.key = NEW_KEY  # the meter has its new key too
    assert (await send_raw(port, push_bytes(m))).check(ConnectionDone)


@pytest_twisted.ensureDeferred
async def test_a_change_through_the_store_reaches_its_own_push_path_at_once(
    backend: Backend, sacs: list[Sac]
) -> None:
    """The store is the one place every change goes through (pages, JSON API, CSV import,
    sac-admin): its own methods, no web involved."""
    store, fleet, sac, port = await started(backend, sacs, count=2)
    a, b = fleet.meters
    for m in (a, b):
        assert (await send_raw(port, push_bytes(m))).check(ConnectionDone)
    await store.meters.set_state(a.ldn, MeterState.DISABLED)
    await store.meters.update(b.ldn, {"allowed_ips": ("127.0.0.9",)})
    assert not (await send_raw(port, push_bytes(a))).check(ConnectionDone)
    assert not (await send_raw(port, push_bytes(b))).check(ConnectionDone)
    assert rejected(sac, "disabled") == 1 and rejected(sac, "ip-not-allowed") == 1
    await store.meters.set_state(a.ldn, MeterState.ACTIVE)
    # a re-key by a key CSV import (sac-admin import-keys, the import page)
    from sac.store.keycsv import KeyRow

    await store.keys.import_rows([KeyRow(2, a.ldn, 1, NEW_KEY, None)], replace=True)
    assert not (await send_raw(port, push_bytes(a))).check(ConnectionDone)
    assert rejected(sac, "bad-tag") == 1
    # a new profile (here one this SAC does not have) applies to the next push
    await store.meters.update(a.ldn, {"profile": "a-vendor-not-installed"})
    a.key = NEW_KEY
    assert not (await send_raw(port, push_bytes(a))).check(ConnectionDone)
    assert rejected(sac, "no-profile") == 1


class Heard:
    """The changes a store hears of (from other processes, on PostgreSQL)."""

    def __init__(self, store: Store) -> None:
        self.waiting: dict[str, Deferred[None]] = {}
        store.watch_meters(self._told)

    def _told(self, ldns: frozenset[str] | None) -> None:
        for ldn, d in list(self.waiting.items()):
            # "*": told that any meter may have changed (and only that)
            hit = ldns is None if ldn == "*" else (ldns is None or ldn in ldns)
            if hit and not d.called:
                del self.waiting[ldn]
                d.callback(None)

    def of(self, ldn: str) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.waiting[ldn] = d
        # a guard, not a measure: a notification that never comes fails the test, not hangs
        return d.addTimeout(10, reactor)


@pytest_twisted.ensureDeferred
async def test_a_change_made_by_another_process_reaches_the_push_path(
    backend: Backend, sacs: list[Sac]
) -> None:
    """Two SACs, each with its own store connections, on one PostgreSQL: a meter changed
    through one (its JSON API) is seen changed by the other's very next push."""
    if backend.kind != "postgresql":
        pytest.skip("SQLite has one process")
    one = backend.make()
    await one.open()
    fleet = make_fleet(2)
    await provision(one, fleet)
    other = backend.make()
    await other.open()
    sac = Sac(other)
    sacs.append(sac)
    port = await sac.listen()
    heard = Heard(other)
    await other.watching()
    api = await Api(one).sign_up()
    a, b = fleet.meters
    for m in (a, b):
        assert (await send_raw(port, push_bytes(m))).check(ConnectionDone)  # cached there
    # disabled through the first process: the second refuses the meter's next push
    changed = heard.of(a.ldn)
    code, _ = await api.call("POST", f"/api/v1/meters/{a.ldn}/disable")
    assert code == 200
    await changed
    assert not (await send_raw(port, push_bytes(a))).check(ConnectionDone)
    assert rejected(sac, "disabled") == 1
    # re-keyed through the first: the old key is refused by the second
    changed = heard.of(b.ldn)
    code, _ = await api.call(
        "PATCH", "/api/v1/meters", {"meters": [{"ldn": b.ldn, "ek": NEW_KEY.hex()}]}
    )
    assert code == 200
    await changed
    assert not (await send_raw(port, push_bytes(b))).check(ConnectionDone)
    assert rejected(sac, "bad-tag") == 1
    b.key = NEW_KEY
    assert (await send_raw(port, push_bytes(b))).check(ConnectionDone)


@pytest_twisted.ensureDeferred
async def test_changes_reach_a_process_again_after_its_connection_was_cut(
    backend: Backend, sacs: list[Sac]
) -> None:
    """The listening connection is cut (a restart, a fail-over): the process forgets every
    cached meter (changes may have been missed), listens again by itself, and hears the
    next change."""
    if backend.kind != "postgresql":
        pytest.skip("SQLite has one process")
    from tests.acquisition.conftest import failures_logged
    from tests.acquisition.test_faults import behind_a_proxy

    one = backend.make()
    await one.open()
    fleet = make_fleet(2)
    await provision(one, fleet)
    proxy, other = await behind_a_proxy(backend)
    sac = Sac(other)
    sacs.append(sac)
    port = await sac.listen()
    heard = Heard(other)
    await other.watching()
    a, b = fleet.meters
    with failures_logged() as failures:
        assert (await send_raw(port, push_bytes(a))).check(ConnectionDone)  # cached
        everything = heard.of("*")
        await proxy.down()
        await everything  # told: any meter may have changed
        await proxy.up()
        everything = heard.of("*")
        await everything  # listening again (and told so once more)
        await answering(other)
        changed = heard.of(a.ldn)
        await one.meters.set_state(a.ldn, MeterState.DISABLED)
        await changed
        assert not (await send_raw(port, push_bytes(a))).check(ConnectionDone)
        assert rejected(sac, "disabled") == 1
        assert (await send_raw(port, push_bytes(b))).check(ConnectionDone)
    assert not failures, failures[0].getTraceback()


async def answering(store: Store) -> None:
    """Until each of the store's pooled connections is back (a few round trips in a row)."""
    from twisted.internet.task import deferLater

    from sac.errors import SacError

    good = 0
    for _ in range(200):  # a guard against hanging, not a measure
        try:
            await store.ping()
            good += 1
            if good == 4:
                return
        except SacError:
            good = 0
            await deferLater(reactor, 0.1, lambda: None)
    raise AssertionError("the store never answered again")


@pytest_twisted.ensureDeferred
async def test_two_sac_services_on_one_postgresql_over_http(
    backend: Backend, tmp_path: Any
) -> None:
    """The whole SAC twice (sac.tap.SacService, each with its store, spool, web and push
    ports) on one PostgreSQL: a meter disabled through the first one's JSON API, over HTTP,
    is refused by the second at its very next push, and its valve close does not run."""
    if backend.kind != "postgresql":
        pytest.skip("SQLite has one process")
    import treq

    from sac.store import Role
    from tests.run.test_tap import config_for, port_of, start

    setup = backend.make()
    await setup.open()
    fleet = make_fleet(1)
    await provision(setup, fleet)
    [m] = fleet.meters
    await setup.users.add("otto", "correct horse battery", Role.OPERATOR)
    token, _ = await setup.tokens.create("otto", "provisioning")
    services = []
    try:
        for name in ("one", "two"):
            (tmp_path / name).mkdir()
            services.append(await start(config_for(backend, tmp_path / name)))
        one, two = services
        heard = Heard(two.store)
        await two.store.watching()
        assert (await push_once(port_of(two.push_ports), m)).end_reason.check(ConnectionDone)
        close = await setup.commands.queue(m.ldn, "valve-close", {}, OPERATOR)
        changed = heard.of(m.ldn)
        answer = await treq.post(
            f"http://127.0.0.1:{port_of(one.web_ports)}/api/v1/meters/{m.ldn}/disable",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert answer.code == 200, await answer.text()
        await changed
        pushed = await push_once(port_of(two.push_ports), m)
        assert not pushed.end_reason.check(ConnectionDone)
        assert two.metrics.value("sac_push_rejected_total", reason="disabled") == 1
        assert (await setup.commands.get(close.id)).state is CommandState.PENDING
        assert m.valve_open
    finally:
        for service in services:
            await service.stopService()
