"""Soak with faults: simulated meters pushing through a real ``twistd sac`` on PostgreSQL
while PostgreSQL is restarted (twice) and the SAC is killed with SIGKILL (once) and started
again; then every reading a meter saw acknowledged must be in the store exactly once, and no
invocation counter the SAC sent a meter may have been sent twice.

    .venv/bin/python -m tests.soak                 # the issue's run: 1,000 meters, 10 min
    .venv/bin/python -m tests.soak --meters 200 --seconds 60

``tests/run/test_soak.py`` runs a short one in the suite.  Valve commands are queued along
the way, so the SAC's own counters (reserved in blocks in the store) are in play too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import deferLater, react
from twisted.internet.threads import deferToThread

from sac.store import Actor
from sac.store.postgres import PostgresStore
from tests.acquisition.conftest import make_fleet, provision
from tests.acquisition.test_kill import Watched, session
from tests.fuzz.run import crash_lines, parse_metrics
from tests.run.test_twistd import write_config
from tests.run.twistd import Twistd, port
from tests.store.conftest import MASTER, PostgresTestDatabase

ENV = {"SAC_MASTER_KEY": MASTER.secret.hex()}
ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
RESTART = ["pg_ctlcluster", "--skip-systemctl-redirect", "15", "main", "restart"]
INDEX = "7.0.13.2.0.255"


def can_restart_postgres() -> str | None:
    """Why PostgreSQL cannot be restarted from here (None: it can)."""
    try:
        status = subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", "15", "main", "status"],
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"pg_ctlcluster cannot run: {exc}"
    if status.returncode != 0:
        return f"pg_ctlcluster 15 main status: {status.stdout}{status.stderr}".strip()
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SoakReport:
    meters: int = 0
    seconds: float = 0.0
    pushes: int = 0
    acknowledged: list[tuple[str, int]] = field(default_factory=list)  # (LDN, UNIX time)
    faults: list[str] = field(default_factory=list)  # what was done, when
    commands_queued: int = 0
    spooled: int = 0  # pushes the SAC spooled (the sum over its lives that could be read)
    readings_checked: int = 0
    counters_checked: int = 0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "meters": self.meters,
            "seconds": round(self.seconds),
            "pushes": self.pushes,
            "acknowledged": len(self.acknowledged),
            "not_acknowledged": self.pushes - len(self.acknowledged),
            "spooled": self.spooled,
            "commands_queued": self.commands_queued,
            "faults": self.faults,
            "readings_checked": self.readings_checked,
            "counters_checked": self.counters_checked,
            "problems": self.problems[:50],
        }


class Soak:
    def __init__(self, tmp: Path, database: PostgresTestDatabase, meters: int) -> None:
        self.tmp = tmp
        self.database = database
        self.fleet = make_fleet(meters)
        self.push_port = free_port()
        self.report = SoakReport(meters=meters)
        self.sac: Twistd | None = None
        self.web = ""
        self.metrics: dict[str, float] = {}  # the live SAC's last scrape
        self.lives = 0
        self.rng = random.Random(11)
        self.started = 0.0
        Watched.seen = {}

    def _at(self) -> str:
        return f"{time.monotonic() - self.started:.0f} s"

    # --- the SAC

    async def start_sac(self) -> None:
        self.lives += 1
        config = write_config(
            self.tmp, self.database.dsn,
            push__listen=f"tcp:{self.push_port}:interface=127.0.0.1",
            push__store_timeout="2",
            poll__enabled="no",
            log__file=str(self.tmp / "sac.log"),
        )  # fmt: skip
        self.sac = Twistd(
            Path(sys.executable).parent, config, self.tmp, ENV, log_file=self.tmp / "sac.log"
        )
        mark = len(self.sac.events())  # the previous lives' lines are in the same file
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready = [e for e in self.sac.events()[mark:] if e["message"].startswith("SAC ready")]
            if ready:
                self.web = f"http://127.0.0.1:{port(ready[0]['web'])}"
                return
            if self.sac.process.poll() is not None:
                break
            await deferLater(reactor, 0.1, lambda: None)
        raise AssertionError(f"the SAC did not start:\n{self.sac.output}")

    async def scrape(self) -> dict[str, float]:
        answer = await treq.get(f"{self.web}/metrics", timeout=5)
        self.metrics = parse_metrics(await answer.text())
        return self.metrics

    def _spooled(self) -> float:
        return self.metrics.get("sac_push_spooled_total", 0.0)

    # --- the faults

    async def restart_postgres(self) -> None:
        t0 = time.monotonic()
        done = await deferToThread(
            subprocess.run, RESTART, capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            self.report.problems.append(f"PostgreSQL restart failed: {done.stderr.strip()}")
        took = time.monotonic() - t0
        self.report.faults.append(f"PostgreSQL restarted at {self._at()} ({took:.1f} s)")

    async def kill_sac(self) -> None:
        assert self.sac is not None
        with contextlib.suppress(Exception):  # a scrape lost is a figure lost, not a failure
            await self.scrape()
        self.report.spooled += int(self._spooled())
        self.sac.kill()
        at = self._at()
        t0 = time.monotonic()
        await self.start_sac()
        self.report.faults.append(
            f"SAC killed (SIGKILL) at {at}, serving again {time.monotonic() - t0:.1f} s later"
        )

    # --- the meters

    async def meter(self, m: Any, interval: float, until: float) -> None:
        await deferLater(reactor, self.rng.uniform(0, interval), lambda: None)
        while time.monotonic() < until:
            self.report.pushes += 1
            ok, unix_time = await session(self.push_port, m)
            if ok:
                self.report.acknowledged.append((m.ldn, unix_time))
            # at least a second apart: each push has its own UNIX time
            await deferLater(
                reactor, max(1.05, interval * self.rng.uniform(0.9, 1.1)), lambda: None
            )

    async def commands(self, store: PostgresStore, every: float, until: float) -> None:
        kinds = ("valve-close", "valve-enable-opening")
        while time.monotonic() < until:
            m = self.rng.choice(self.fleet.meters)
            try:
                await store.commands.queue(m.ldn, self.rng.choice(kinds), {}, Actor("soak"))
                self.report.commands_queued += 1
            except Exception:
                pass
            await deferLater(reactor, every, lambda: None)

    # --- the run

    async def run(
        self, seconds: float, interval: float, faults: list[tuple[float, str]]
    ) -> SoakReport:
        report = self.report
        store = PostgresStore(self.database.dsn, MASTER, connections=1)
        await store.open()
        await provision(store, self.fleet)
        await self.start_sac()
        self.started = time.monotonic()
        until = self.started + seconds
        work = [Deferred.fromCoroutine(self.meter(m, interval, until)) for m in self.fleet.meters]
        work.append(Deferred.fromCoroutine(self.commands(store, interval / 10, until)))
        actions: dict[str, Callable[[], Any]] = {
            "pg-restart": self.restart_postgres,
            "kill": self.kill_sac,
        }
        for at, what in sorted(faults):
            await deferLater(reactor, max(0.0, self.started + at - time.monotonic()), lambda: None)
            await actions[what]()
        for ok, result in await DeferredList(work, consumeErrors=True):
            if not ok:
                report.problems.append(f"a meter's loop crashed: {result.getTraceback()}")
        report.seconds = time.monotonic() - self.started
        await store.close()
        await self.drain()
        await self.check()
        return report

    async def drain(self) -> None:
        """The spool replayed, then a clean stop."""
        assert self.sac is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                metrics = await self.scrape()
            except Exception:
                metrics = {}
            if metrics and not metrics.get("sac_spool_depth"):
                break
            await deferLater(reactor, 0.5, lambda: None)
        else:
            self.report.problems.append(f"the spool did not empty: {self.metrics}")
        self.report.spooled += int(self._spooled())
        code = await self.sac.stop()
        if code not in (0, -15):
            self.report.problems.append(f"twistd ended with {code}")
        log = (self.tmp / "sac.log").read_text(errors="replace")
        if log.count("SAC stopped cleanly") != 1:
            self.report.problems.append("the last SAC did not stop cleanly")
        self.report.problems += [f"twistd: {line}" for line in crash_lines(self.tmp)]

    async def check(self) -> None:
        report = self.report
        rows = await deferToThread(self._query)
        held: dict[tuple[str, int], int] = {}
        for ldn, captured, count in rows["index"]:
            held[(ldn, int(captured.timestamp()))] = count
        for ldn, unix_time in report.acknowledged:
            count = held.get((ldn, unix_time), 0)
            report.readings_checked += 1
            if count != 1:
                report.problems.append(f"{ldn} at {unix_time}: acknowledged, stored {count} times")
        for ldn, ours in rows["counters"]:
            sent = Watched.seen.get(ldn, [])
            report.counters_checked += len(sent)
            if sent != sorted(set(sent)):
                report.problems.append(f"{ldn}: a counter sent twice: {sent}")
            if sent and ours < sent[-1]:
                report.problems.append(f"{ldn}: sent {sent[-1]} but reserved only up to {ours}")

    def _query(self) -> dict[str, list[tuple[Any, ...]]]:
        conn = psycopg2.connect(self.database.dsn)
        try:
            with conn, conn.cursor() as cur:
                cur.execute(
                    "SELECT m.ldn, r.captured, count(*) FROM readings r"
                    " JOIN meters m ON m.id = r.meter_id"
                    " WHERE r.obis = %s AND r.attribute = 2 AND r.source LIKE 'cf%%'"
                    " GROUP BY m.ldn, r.captured",
                    (INDEX,),
                )
                index = cur.fetchall()
                cur.execute(
                    "SELECT m.ldn, c.ours FROM invocation_counters c"
                    " JOIN meters m ON m.id = c.meter_id WHERE c.client_sap = 1"
                )
                counters = cur.fetchall()
        finally:
            conn.close()
        return {"index": index, "counters": counters}


def fault_plan(seconds: float) -> list[tuple[float, str]]:
    """PostgreSQL restarted at 1/4 and 3/4 of the run, the SAC killed at 1/2."""
    return [(seconds / 4, "pg-restart"), (seconds / 2, "kill"), (seconds * 3 / 4, "pg-restart")]


async def soak(tmp: Path, meters: int, seconds: float, interval: float) -> SoakReport:
    database = PostgresTestDatabase(ADMIN_DSN)
    soaker = Soak(tmp, database, meters)
    try:
        return await soaker.run(seconds, interval, fault_plan(seconds))
    finally:
        if soaker.sac is not None:
            soaker.sac.kill()
        database.drop()


async def main(args: argparse.Namespace) -> None:
    why = can_restart_postgres()
    if why:
        raise SystemExit(f"cannot soak: {why}")
    with tempfile.TemporaryDirectory(prefix="sac-soak-") as tmp:
        report = await soak(Path(tmp), args.meters, args.seconds, args.interval)
    print(json.dumps(report.summary(), indent=2))
    if report.problems:
        raise SystemExit(1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__)
    parser.add_argument("--meters", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between pushes")
    arguments = parser.parse_args()
    react(lambda _reactor: Deferred.fromCoroutine(main(arguments)))
