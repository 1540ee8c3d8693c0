"""Issue 23: two processes, one PostgreSQL, one balancer.  Two ``twistd -n sac`` (each its
push and web ports, spool and name) on a fresh PostgreSQL database, Debian's HAProxy in
``mode tcp`` spreading the meters' TCP sessions over both push listeners (roundrobin); a
simulated fleet pushes through it, round after round, with commands queued for some meters
through the first process's JSON API.

Checked: every push the SAC acknowledged (a clean close through the balancer) is in the
readings exactly once; every command ran exactly once (done, one attempt, one move to
``sent``); no invocation counter of ours reached a meter twice (the counters each meter
received, across both processes, rise strictly) and the stored reservations cover them;
both processes served sessions; and a meter disabled through the first process's API is
refused by the second promptly, though the second held it in its 30-second cache: the
LISTEN/NOTIFY path (``Store.watch_meters``), not the cache's expiry.  Through HAProxy that
refusal (a reset from the SAC) reaches the meter as a clean close: docs/operations.md
section 9 says so, and this test notices if it stops being true.
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.task import deferLater

from sac.dlms.security import CipheredApdu
from sac.errors import SacError
from sac.simulator.fleet import Fleet
from sac.simulator.meter import SimulatedMeter
from sac.simulator.session import MeterProtocol
from sac.store import Role
from sac.store.postgres import PostgresStore
from tests.acquisition.conftest import REGISTRY, provision
from tests.run.balancer import HAPROXY, Haproxy, free_port
from tests.run.twistd import Twistd, port
from tests.store.conftest import ADMIN_DSN, MASTER, PostgresTestDatabase

VENV_BIN = Path(sys.executable).parent
ENV = {"SAC_MASTER_KEY": MASTER.secret.hex()}
FLEET, ROUNDS, COMMANDED = 24, 3, 6
INDEX = "7.0.13.2.0.255"  # the push's volume index, captured at the push's time
PROFILE = REGISTRY["uni-ts-11291-12-2"]
TEMPLATE = PROFILE.push_templates[0]  # the source of its readings: cf<template>
CLOCK = {"class_id": 8, "obis": "0.0.1.0.0.255", "attribute": 2}
CHANGE_WITHIN = 10.0  # seconds: under the push path's 30 s cache, so only NOTIFY explains it


class Simulated:
    """The fleet (its clock set round by round: each push of a meter at its own second) and
    every invocation counter of ours each meter received, in the order it received them."""

    def __init__(self, count: int) -> None:
        self.now = time.time() - (ROUNDS + 1) * 900
        self.fleet = Fleet(count, PROFILE, clock=lambda: self.now, reactor=reactor)
        self.received: dict[str, list[int]] = {m.ldn: [] for m in self.fleet.meters}
        self.acked: list[tuple[str, int]] = []  # (LDN, the push's time) closed cleanly

    def _counting(self, meter: SimulatedMeter) -> MeterProtocol:
        protocol = MeterProtocol(meter, push_template=TEMPLATE, reactor=reactor)
        unprotect = protocol.security.unprotect

        def counted(data: Any) -> bytes:
            try:
                apdu = data if isinstance(data, CipheredApdu) else CipheredApdu.from_bytes(data)
                self.received[meter.ldn].append(apdu.invocation_counter)
            except SacError:
                pass  # not a ciphered APDU: the meter refuses it as it would
            return unprotect(data)

        protocol.security.unprotect = counted  # type: ignore[method-assign]
        return protocol

    async def push(self, to: int, meter: SimulatedMeter) -> bool:
        """One push session of ``meter`` to ``to``; whether the SAC closed it cleanly."""
        protocol = self._counting(meter)
        ended: Deferred[list[Any]] = Deferred()
        lost = protocol.connectionLost

        def on_lost(reason: Any = None) -> None:
            lost(reason)
            ended.callback([reason])  # a Failure given to callback would be an errback

        protocol.connectionLost = on_lost  # type: ignore[method-assign]
        at = int(self.now)
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", to), protocol)
        clean = bool((await ended)[0].check(ConnectionDone))
        if clean:
            self.acked.append((meter.ldn, at))
        return clean


def sac_config(folder: Path, dsn: str, name: str) -> Path:
    folder.mkdir()
    text = (
        f"[store]\naddress = {dsn}\nconnections = 2\n"
        f"[push]\nlisten = tcp:0:interface=127.0.0.1\nspool = {folder / 'spool'}\n"
        "[web]\nlisten = tcp:0:interface=127.0.0.1\nsecure_cookies = no\n"
        "[poll]\nenabled = no\n[log]\nformat = json\n"
        f"[sac]\nname = {name}\n"
    )
    (folder / "sac.ini").write_text(text)
    return folder / "sac.ini"


class Cluster:
    """The database, the two processes and the balancer of one test."""

    def __init__(self, tmp_path: Path, database: PostgresTestDatabase) -> None:
        self.tmp_path, self.database = tmp_path, database
        self.sacs: list[Twistd] = []
        self.ready: list[dict[str, Any]] = []
        self.balancer: Haproxy | None = None

    async def start(self) -> None:
        for name in ("sac-a", "sac-b"):
            config = sac_config(self.tmp_path / name, self.database.dsn, name)
            self.sacs.append(Twistd(VENV_BIN, config, self.tmp_path / name, ENV))
        for sac in self.sacs:
            self.ready.append(await sac.wait_for("SAC ready"))
        backends = [port(r["push"]) for r in self.ready]
        self.balancer = Haproxy(self.tmp_path, free_port(), backends)
        await self.balancer.ready()

    def web(self, i: int) -> str:
        return f"http://127.0.0.1:{port(self.ready[i]['web'])}"

    def push_port(self, i: int) -> int:
        return port(self.ready[i]["push"])

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        return self.database.query(self.database.dsn, sql)

    def sessions(self, i: int) -> list[dict[str, Any]]:
        return [e for e in self.sacs[i].events() if e["message"].startswith("push session from")]

    async def logged(self, part: str, count: int, timeout: float = 30.0) -> None:
        """Once ``count`` session lines of either process hold ``part`` (the timeout only
        ends a run gone wrong)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = [e for i in (0, 1) for e in self.sessions(i) if part in e["message"]]
            if len(lines) >= count:
                return
            await deferLater(reactor, 0.05, lambda: None)
        raise AssertionError(f"not {count} session lines with {part!r}")

    async def stop(self) -> None:
        if self.balancer is not None:
            self.balancer.stop()
        for sac in self.sacs:
            try:
                await sac.stop()
            finally:
                sac.kill()


@pytest.fixture
def database() -> Any:
    if not HAPROXY:
        pytest.skip("no haproxy here (Debian's package haproxy: .ci/run installs it)")
    try:
        made = PostgresTestDatabase(ADMIN_DSN)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"no PostgreSQL server reachable ({ADMIN_DSN}): {str(exc).strip()}")
    yield made
    made.drop()


async def prepared(database: PostgresTestDatabase, sim: Simulated) -> str:
    """The fleet and its keys in the fresh database, and an operator's API token."""
    store = PostgresStore(database.dsn, MASTER, connections=1)
    await store.open()
    try:
        await provision(store, sim.fleet)
        await store.users.add("otto", "correct horse battery", Role.OPERATOR)
        token, _ = await store.tokens.create("otto", "erp")
    finally:
        await store.close()
    return str(token)


async def queue_reads(cluster: Cluster, token: str, ldns: list[str]) -> list[int]:
    ids = []
    for ldn in ldns:
        answer = await treq.post(
            f"{cluster.web(0)}/api/v1/meters/{ldn}/commands",
            json={"kind": "read-attribute", "params": CLOCK},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert answer.code == 201, await answer.text()
        ids.append((await answer.json())["id"])
    return ids


async def push_rounds(cluster: Cluster, sim: Simulated, meters: list[SimulatedMeter]) -> None:
    assert cluster.balancer is not None
    for _ in range(ROUNDS):
        sim.now += 900
        pushed = [sim.push(cluster.balancer.port, m) for m in meters]
        done = await gatherResults([Deferred.fromCoroutine(p) for p in pushed])
        assert all(done), "a push through the balancer was not acknowledged"


@pytest_twisted.ensureDeferred
async def test_two_processes_behind_haproxy_share_one_postgresql(
    tmp_path: Path, database: PostgresTestDatabase
) -> None:
    sim = Simulated(FLEET + 1)
    meters, watched = sim.fleet.meters[:FLEET], sim.fleet.meters[FLEET]
    token = await prepared(database, sim)
    cluster = Cluster(tmp_path, database)
    try:
        await cluster.start()
        commands = await queue_reads(cluster, token, [m.ldn for m in meters[:COMMANDED]])
        await push_rounds(cluster, sim, meters)
        await cluster_checks(cluster, sim, meters, commands)
        await change_seen_by_the_other(cluster, sim, watched, token)
    finally:
        await cluster.stop()
    for sac in cluster.sacs:
        assert sac.event("SAC stopped cleanly") is not None, sac.output
        assert "Traceback" not in sac.output, sac.output
        assert not [e for e in sac.events() if e["level"] in ("error", "critical")], sac.output


async def cluster_checks(
    cluster: Cluster, sim: Simulated, meters: list[SimulatedMeter], commands: list[int]
) -> None:
    # every acknowledged push in the readings exactly once: its index at its time
    assert len(sim.acked) == FLEET * ROUNDS
    rows = cluster.query(
        "SELECT m.ldn, extract(epoch FROM r.captured)::bigint, count(*) FROM readings r"
        f" JOIN meters m ON m.id = r.meter_id WHERE r.obis = '{INDEX}' AND r.attribute = 2"
        f" AND r.source = 'cf{TEMPLATE}' GROUP BY 1, 2"
    )
    stored = {(ldn, int(t)): n for ldn, t, n in rows}
    assert stored == dict.fromkeys(sim.acked, 1)
    # each queued command ran once, whichever process held the meter's session
    done = cluster.query(
        "SELECT c.id, c.state, c.attempts, (SELECT count(*) FROM command_log l"
        " WHERE l.command_id = c.id AND l.state = 'sent') FROM commands c ORDER BY c.id"
    )
    assert done == [(i, "done", 1, 1) for i in commands]
    # our counters: each meter received each once, rising, and the store reserved them
    reserved = dict(
        cluster.query(
            "SELECT m.ldn, c.ours FROM invocation_counters c JOIN meters m ON m.id = c.meter_id"
            " WHERE c.client_sap = 1"
        )
    )
    for m in meters:
        seen = sim.received[m.ldn]
        assert seen, f"{m.ldn} received no request"  # its read plan at least
        assert all(a < b for a, b in itertools.pairwise(seen)), (m.ldn, seen)
        assert reserved[m.ldn] >= seen[-1]
    # both processes served sessions, and all of them between them
    served = [len(cluster.sessions(i)) for i in (0, 1)]
    assert min(served) > 0 and sum(served) == FLEET * ROUNDS, served


async def change_seen_by_the_other(
    cluster: Cluster, sim: Simulated, meter: SimulatedMeter, token: str
) -> None:
    """The meter pushes to B (B caches it), is disabled through A's API; B refuses its push
    within CHANGE_WITHIN seconds, well inside the 30 s its cache would otherwise keep it."""
    sim.now += 900
    assert await sim.push(cluster.push_port(1), meter)
    answer = await treq.post(
        f"{cluster.web(0)}/api/v1/meters/{meter.ldn}/disable",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.code == 200, await answer.text()
    deadline = time.monotonic() + CHANGE_WITHIN
    while time.monotonic() < deadline:
        sim.now += 60
        if not await sim.push(cluster.push_port(1), meter):
            break
    else:
        raise AssertionError(f"process B still took {meter.ldn}'s pushes after it was disabled")
    # refused for being disabled (the log line comes after the reset the meter saw)
    await cluster.sacs[1].wait_for(f"push session from 127.0.0.1, meter {meter.ldn}: disabled")
    # through HAProxy the same refusal reaches the meter as a clean close, as
    # docs/operations.md section 9 warns (a proxy ends the meter's connection itself)
    sim.now += 60
    assert await sim.push(cluster.balancer.port, meter), "HAProxy now passes resets on: docs"
    await cluster.logged(f"meter {meter.ldn}: disabled", 2)  # refused by the SAC: 2 in all
