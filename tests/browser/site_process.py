"""A whole SAC for the browser tests, as its own process: the service of ``twistd sac``
(web pages and push listener on loopback, a SQLite store), three simulated meters calling in
every 2 seconds, 40 days of one meter's history, a tamper alarm on another, an operator
and an admin.

``python -m tests.browser.site_process STORE_PATH READY_FILE`` (master key in
SAC_MASTER_KEY, the operator's password in SAC_TEST_PASSWORD); it writes
``{"web": port, "meters": [LDN, ...]}`` to READY_FILE once serving.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred

from sac.config import load_config
from sac.dlms import Obis
from sac.simulator.fleet import Fleet, SimClock
from sac.store import Event, Ingest, NewMeter, Reading, Role
from sac.tap import SacService

INDEX = Obis("7.0.13.2.0.255")


async def main(path: str, ready: str) -> None:
    config = load_config(
        None,
        {
            "SAC_MASTER_KEY": os.environ["SAC_MASTER_KEY"],
            "SAC_STORE_ADDRESS": f"sqlite:{path}",
            "SAC_PUSH_LISTEN": "tcp:0:interface=127.0.0.1",
            "SAC_PUSH_SPOOL": str(Path(path).parent / "spool"),
            "SAC_PUSH_RESPONSE_TIMEOUT": "3",
            "SAC_WEB_LISTEN": "tcp:0:interface=127.0.0.1",
            "SAC_WEB_SECURE_COOKIES": "no",
            "SAC_SAC_NAME": "browser-test",
        },
    )
    sac = SacService(config, reactor=reactor, exit_on_failure=False)
    sac.startService()
    await sac.ready
    store = sac.store
    await store.users.add("otto", os.environ["SAC_TEST_PASSWORD"], Role.OPERATOR)
    await store.users.add("ada", os.environ["SAC_TEST_PASSWORD"], Role.ADMIN)
    profile = sac.registry["uni-ts-11291-12-2"]
    fleet = Fleet(3, profile, clock=SimClock(reactor), reactor=reactor, seed=11)
    for m in fleet.meters:
        await store.meters.add(
            NewMeter(m.ldn, pdr=m.pdr, system_title=m.system_title, profile=profile.name),
            keys={1: (m.key, None)},
        )
    first = fleet.meters[0]
    now = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    history = [
        Reading(first.ldn, INDEX, 2, first.index_litres - 2500 * d, t, "poll", t, -3, 14)
        for d in range(40, 0, -1)
        for t in [now - dt.timedelta(days=d)]
    ]
    await store.readings.ingest(Ingest(readings=history))
    # an alarm to acknowledge: the last meter's tamper switch, an hour ago (event 80)
    last, logbook = fleet.meters[-1], profile.objects["event_logbook"].obis
    tamper = Event(last.ldn, logbook, 80, now - dt.timedelta(hours=1), now, "poll")
    await store.readings.ingest(Ingest(events=[tamper]))
    fleet.start_pushing("127.0.0.1", sac.push_ports[0].getHost().port, interval=2.0)
    answer = {"web": sac.web_ports[0].getHost().port, "meters": [m.ldn for m in fleet.meters]}
    Path(ready + ".tmp").write_text(json.dumps(answer))
    Path(ready + ".tmp").rename(ready)


if __name__ == "__main__":
    ensureDeferred(main(*sys.argv[1:3])).addErrback(lambda f: (f.printTraceback(), reactor.stop()))
    reactor.run()
