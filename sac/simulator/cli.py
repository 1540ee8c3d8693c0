"""``sac-simulate``: a fleet of simulated UNI/TS 11291 gas meters (see docs/simulator.md)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)

from sac.console import run_command
from sac.errors import SacError
from sac.profiles import GENERIC_PROFILE, discover_profiles
from sac.simulator.fleet import Fleet, SimClock

__all__ = ["main"]

DESCRIPTION = """\
Simulate UNI/TS 11291-12 gas meters speaking DLMS/COSEM over the TCP wrapper.

Each meter has its own LDN (<manufacturer><13-digit serial>), UNI/TS system title, PDR and
Management key (EK = AK, derived from --seed), and lives over simulated time: gas along a
daily curve, battery draining, daily load profile, event and metrological logbooks, and the
valve (close; enable opening -> ready, then opened by the customer).

push mode   each meter wakes every --interval simulated seconds, connects to --sac, sends a
            ciphered DATA-NOTIFICATION with its profile's push frame (CF47/48, CF30, ...),
            then answers the SAC's requests (Public client 16 without ciphering, Management
            client 1 pre-established with general-glo-ciphering, IC = FC + 1) until the SAC
            closes, 30 s of silence, or the profile's session budget.  A meter whose push
            schedule the SAC sets pushes at its execution times instead (docs/simulator.md).
listen mode meter i listens on --listen-base + i and waits for the SAC to poll it.

--keys-csv writes the meters' keys in the format the SAC imports (ldn,client,ek,ak);
--meters-csv writes ldn,pdr,system_title,profile,address.
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sac-simulate",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--meters", type=int, default=10, help="how many meters (default 10)")
    p.add_argument(
        "--profile", default=GENERIC_PROFILE, help=f"meter profile (default {GENERIC_PROFILE})"
    )
    p.add_argument("--list-profiles", action="store_true", help="list the profiles and exit")
    p.add_argument("--manufacturer", default="SIM", help="FLAG id of the meters (default SIM)")
    p.add_argument("--first-serial", type=int, default=1, help="serial of the first meter")
    p.add_argument("--seed", type=int, default=0, help="seed of the keys and the randomness")
    p.add_argument("--mode", choices=("push", "listen"), default="push")
    p.add_argument("--sac", default="127.0.0.1:4059", help="push mode: the SAC's HOST:PORT")
    p.add_argument(
        "--interval", type=float, default=86_400, help="push mode: simulated seconds between calls"
    )
    p.add_argument("--max-sessions", type=int, default=200, help="push mode: sessions open at once")
    p.add_argument(
        "--listen-base", type=int, default=14059, help="listen mode: port of the first meter"
    )
    p.add_argument("--interface", default="127.0.0.1", help="listen mode: address to listen on")
    p.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second")
    p.add_argument("--keys-csv", type=Path, help="write the keys CSV for the SAC here")
    p.add_argument("--meters-csv", type=Path, help="write the meters CSV here")
    p.add_argument("--duration", type=float, help="stop after this many real seconds")
    p.add_argument("--verbose", action="store_true", help="log every session (default: warnings)")
    return p


async def _run(reactor: Any, args: argparse.Namespace) -> None:
    found = discover_profiles()
    for problem in found.problems:
        print(problem, file=sys.stderr)
    if args.list_profiles:
        for profile in found.registry.profiles.values():
            print(f"{profile.name:24} {profile.description}")
        return
    profile = found.registry[args.profile]
    if not profile.push_templates and args.mode == "push":
        raise SacError(f"profile {profile.name} declares no push frame")
    clock = SimClock(reactor, args.speed)
    fleet = Fleet(
        args.meters,
        profile,
        manufacturer=args.manufacturer,
        first_serial=args.first_serial,
        seed=args.seed,
        clock=clock,
        reactor=reactor,
    )
    if args.keys_csv:
        args.keys_csv.write_text(fleet.keys_csv())
    listen_base = args.listen_base if args.mode == "listen" else None
    if args.meters_csv:
        args.meters_csv.write_text(fleet.meters_csv(listen_base, args.interface))
    await _start(fleet, args)
    sys.stdout.flush()
    finished: Deferred[None] = Deferred()
    if args.duration is not None:
        reactor.callLater(args.duration, finished.callback, None)
    await finished
    await fleet.stop()
    if args.mode == "push":
        print(
            f"pushes: {fleet.pushes}, failed connections: {fleet.failures}, "
            f"failed pushes: {fleet.failed_pushes}"
        )


async def _start(fleet: Fleet, args: argparse.Namespace) -> None:
    """The meters listen, or start pushing to the SAC, as ``--mode`` says."""
    if args.mode == "listen":
        ports = await fleet.listen(args.listen_base, args.interface)
        print(f"{len(ports)} meters listening on {args.interface}:{ports[0]}..{ports[-1]}")
        return
    host, _, port = args.sac.rpartition(":")
    if not host or not port.isdigit():
        raise SacError(f"--sac wants HOST:PORT, not {args.sac!r}")
    fleet.start_pushing(host, int(port), args.interval, max_sessions=args.max_sessions)
    every = f"every {args.interval:g} simulated s, time x{args.speed:g}"
    print(f"{len(fleet.meters)} meters pushing to {host}:{port} {every}")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.meters < 1:
        print("sac-simulate: --meters must be at least 1", file=sys.stderr)
        return 2
    level = LogLevel.debug if args.verbose else LogLevel.warn
    observer = FilteringLogObserver(
        textFileLogObserver(sys.stderr), [LogLevelFilterPredicate(defaultLogLevel=level)]
    )
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    return run_command("sac-simulate", lambda reactor: _run(reactor, args))


if __name__ == "__main__":
    sys.exit(main())
