"""A whole SAC for the browser tests, as its own process: the web pages and the push
listener on loopback, a SQLite store, three simulated meters calling in every 2 seconds,
40 days of one meter's history, and an operator.

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
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.web.server import Site

from sac.dlms import Obis
from sac.keys import MasterKey
from sac.passwords import ScryptParams
from sac.profiles import discover_profiles
from sac.protocols.push import ListenerSettings, PushFactory
from sac.services.acquisition import Acquisition
from sac.services.session import SessionSettings
from sac.simulator.fleet import Fleet, SimClock
from sac.store import Ingest, NewMeter, Reading, Role
from sac.store.sqlite import SQLiteStore
from sac.web.app import Web, WebSettings

INDEX = Obis("7.0.13.2.0.255")


async def main(path: str, ready: str) -> None:
    registry = discover_profiles().registry
    store = SQLiteStore(path, MasterKey.from_environment(), password_params=ScryptParams(log2_n=8))
    await store.open()
    await store.add_user("otto", os.environ["SAC_TEST_PASSWORD"], Role.OPERATOR)
    await store.add_user("ada", os.environ["SAC_TEST_PASSWORD"], Role.ADMIN)
    profile = registry["uni-ts-11291-12-2"]
    fleet = Fleet(3, profile, clock=SimClock(reactor), reactor=reactor, seed=11)
    for m in fleet.meters:
        await store.add_meter(
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
    await store.ingest(Ingest(readings=history))
    acquisition = Acquisition(store, registry, reactor=reactor)
    push = PushFactory(
        acquisition,
        store,
        reactor=reactor,
        settings=ListenerSettings(response_timeout=3.0),
        session=SessionSettings(name="browser-test"),
    )
    listener = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(push)
    web = Web(
        store,
        registry,
        metrics=acquisition.metrics,
        settings=WebSettings(secure_cookies=False),
        health={"push listener": lambda: (True, f"tcp:{listener.getHost().port}")},
    )
    site = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(web.resource()))
    fleet.start_pushing("127.0.0.1", listener.getHost().port, interval=2.0)
    answer = {"web": site.getHost().port, "meters": [m.ldn for m in fleet.meters]}
    Path(ready + ".tmp").write_text(json.dumps(answer))
    Path(ready + ".tmp").rename(ready)


if __name__ == "__main__":
    ensureDeferred(main(*sys.argv[1:3])).addErrback(lambda f: (f.printTraceback(), reactor.stop()))
    reactor.run()
