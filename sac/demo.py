"""``make demo``: the SAC with a simulated fleet, on SQLite, in one process.

    python -m sac.demo [--meters 300] [--speed 60] [--port 8080] [--dir .demo]

It starts the same service as ``twistd sac`` (:class:`sac.tap.SacService`) on a fresh SQLite
store in ``--dir``, adds an ``admin`` user with a new random password (printed once), adds
``--meters`` simulated UNI/TS 11291 gas meters with 90 days of history, and lets them push
every simulated quarter of an hour, time running ``--speed`` times faster than the wall
clock from a day ago until it reaches the wall clock (about ``24 h / speed``), then at the
wall clock's pace: nothing they push is ever dated in the future.  Valve commands queued in
the browser run when the meter next calls.  The URL is printed once everything is ready;
Ctrl-C stops the SAC and the meters, and nothing is left running.  The whole log is in
``--dir``/sac.log, warnings and errors on the terminal too; ``--dir``/sac.ini is the
configuration (its master key in ``master.key``, 0600), for ``sac-admin --config``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import secrets
import shutil
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import react
from twisted.logger import globalLogBeginner

from sac.config import load_config
from sac.errors import SacError
from sac.keys import new_master_key
from sac.logs import make_observer
from sac.profiles import discover_profiles
from sac.simulator.fleet import Fleet, SimClock
from sac.store import Ingest, NewMeter, Reading, Role
from sac.tap import SacService

__all__ = ["main"]

PROFILE = "uni-ts-11291-12-2"
PUSH_EVERY = 900  # simulated seconds between two pushes of a meter
HISTORY_DAYS = 90
HOURLY_DAYS = 3  # the last days of history have hourly readings too


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sac.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=300, help="simulated meters (default 300)")
    parser.add_argument(
        "--speed", type=float, default=60.0, help="simulated seconds a second (default 60)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=8080,
        help="web port on 127.0.0.1 (default 8080; a free one if taken)",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(".demo"),
        help="where the demo keeps its store (default .demo)",
    )
    return parser


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _history(fleet: Fleet, start: dt.datetime) -> list[Reading]:
    """Each meter's index before the simulation starts, going back from its index: one
    reading at the end of each day (22:00 UTC) for HISTORY_DAYS, every hour for the last
    HOURLY_DAYS; each day uses more or less gas than the meter's mean (the weather), weekends
    more."""
    readings = []
    index_obis = fleet.profile.objects["converted_volume_index"].obis
    scaler, unit = fleet.profile.volume_scaler_unit
    for m in fleet.meters:
        index = m.index_litres
        for hours in range(1, HISTORY_DAYS * 24 + 1):
            at = start - dt.timedelta(hours=hours)
            day = (start - at).days
            weather = 1 + 0.35 * math.sin(day / 5 + m.serial) + (0.2 if at.weekday() >= 5 else 0)
            index = max(0, index - round(m.litres_per_day / 24 * weather))
            if hours <= HOURLY_DAYS * 24 or at.hour == 22:
                readings.append(Reading(m.ldn, index_obis, 2, index, at, "poll", at, scaler, unit))
    return readings


async def _prepare(service: SacService, fleet: Fleet, start: dt.datetime) -> str:
    store = service.store
    password = secrets.token_urlsafe(12)
    await store.users.add("admin", password, Role.ADMIN)
    profile = fleet.profile.name
    await store.meters.add_many(  # with the Management client's key (AK = EK)
        [
            (
                NewMeter(m.ldn, pdr=m.pdr, system_title=m.system_title, profile=profile),
                {1: (m.key, None)},
            )
            for m in fleet.meters
        ]
    )
    history = _history(fleet, start)
    for i in range(0, len(history), 5000):
        await store.readings.ingest(Ingest(readings=history[i : i + 5000]))
    return password


def _write_config(folder: Path, port: int, meters: int) -> Path:
    """The demo's configuration, ``sac.ini`` in ``folder``, and its master key beside it
    (``master.key``, 0600; a new one each run: the store is new each time), so that
    ``sac-admin --config <folder>/sac.ini ...`` works on the demo's store."""
    key = folder / "master.key"
    key.unlink(missing_ok=True)
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(new_master_key() + "\n")
    ini = folder / "sac.ini"
    ini.write_text(
        "# written by `make demo` at each start (sac.ini.example documents every line)\n"
        "[sac]\nname = demo\nstop_grace = 2\n"
        f"[store]\naddress = sqlite:{folder / 'sac.db'}\nmaster_key_file = {key}\n"
        # the fleet's sessions and a margin: no need for the 20,000 of a production SAC
        f"[push]\nlisten = tcp:0:interface=127.0.0.1\nspool = {folder / 'spool'}\n"
        f"max_sessions = {max(1000, 4 * meters)}\n"
        # plain HTTP on the loopback
        f"[web]\nlisten = tcp:{port}:interface=127.0.0.1\nsecure_cookies = no\n"
        "name = SAC demo\n",
        encoding="utf-8",
    )
    return ini


def _fresh_dir(args: argparse.Namespace) -> None:
    """The arguments checked, and ``--dir`` ready: without the last run's store, spool and
    log."""
    if not 1 <= args.meters <= 10_000:
        raise SacError("--meters: from 1 to 10,000")
    if args.speed <= 0:
        raise SacError("--speed must be positive")
    args.dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(args.dir / "spool", ignore_errors=True)
    for old in args.dir.glob("sac.db*"):
        old.unlink()
    (args.dir / "sac.log").unlink(missing_ok=True)


def _start_logging(log_file: Path) -> None:
    """Everything in ``log_file``, warnings and errors on the terminal too."""
    globalLogBeginner.beginLoggingTo(
        [make_observer("text", "info", str(log_file)), make_observer("text", "warn", "stderr")],
        redirectStandardIO=False,
    )


def _fleet(reactor: Any, args: argparse.Namespace, start: dt.datetime) -> Fleet:
    registry = discover_profiles().registry
    return Fleet(
        args.meters,
        registry[PROFILE],
        # fast through the last day, then the wall clock: never a reading from the future
        clock=SimClock(reactor, args.speed, start=start.timestamp(), catch_up=True),
        reactor=reactor,
        seed=secrets.randbits(32),
    )


def _banner(args: argparse.Namespace, start: dt.datetime, web: Any, password: str) -> str:
    """What the terminal shows once the demo is ready: where, who, and how long."""
    every = PUSH_EVERY / args.speed
    catch_up = 86400 / args.speed / 60
    return f"""
SAC demo: {args.meters} simulated gas meters push every {every:g} s. Their time starts a day ago
({start:%Y-%m-%d %H:%M} UTC) and runs {args.speed:g}x, a push every {PUSH_EVERY // 60} simulated \
minutes, until it reaches now (in about {catch_up:.0f} minutes); then it follows the clock.

    open      http://{web.host}:{web.port}/
    user      admin
    password  {password}      (shown once: a new store and password at each start)

Store, log (sac.log) and configuration (sac.ini) in {args.dir}/; sac-admin works on them:
    .venv/bin/sac-admin --config {args.dir}/sac.ini create-token admin my-erp
Ctrl-C stops the SAC and the meters.
"""


async def run(reactor: Any, args: argparse.Namespace) -> None:
    _fresh_dir(args)
    _start_logging(args.dir / "sac.log")
    port = args.port if _free(args.port) else 0
    ini = _write_config(args.dir.resolve(), port, args.meters)
    config = load_config(str(ini), {})  # the file alone, as sac-admin --config reads it
    service = SacService(config, reactor=reactor, exit_on_failure=False)
    stopped: Deferred[None] = Deferred()
    fleet: Fleet | None = None

    async def stop() -> None:
        if fleet is not None:
            await fleet.stop()
        await service.stopService()
        print("\nSAC demo stopped.", flush=True)
        if not stopped.called:
            stopped.callback(None)

    reactor.addSystemEventTrigger("before", "shutdown", lambda: ensureDeferred(stop()))
    service.startService()
    await service.ready
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    start = now - dt.timedelta(days=1)
    fleet = _fleet(reactor, args, start)
    password = await _prepare(service, fleet, start)
    push_port = service.push_ports[0].getHost().port
    fleet.start_pushing("127.0.0.1", push_port, PUSH_EVERY)
    web = service.web_ports[0].getHost()
    print(_banner(args, start, web, password), flush=True)
    await stopped


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    status = 0
    # Ctrl-C stops the demo, even when it was started with SIGINT ignored (a shell's
    # background job, a CI runner): Twisted only takes over a default SIGINT handler
    signal.signal(signal.SIGINT, signal.default_int_handler)

    async def demo(reactor: Any) -> None:
        nonlocal status
        try:
            await run(reactor, args)
        except SacError as exc:
            print(f"sac demo: {exc}", file=sys.stderr)
            status = 1

    try:
        react(lambda reactor: ensureDeferred(demo(reactor)))
    except SystemExit as done:
        return int(done.code or status)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
