"""A SAC push listener as its own process, for tests that kill it: ``python -m
tests.acquisition.sac_process STORE SPOOL_DIR PORT_FILE`` (master key in SAC_MASTER_KEY).
It writes its port to PORT_FILE once listening."""

from __future__ import annotations

import sys
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint

from sac.keys import MasterKey
from sac.profiles import discover_profiles
from sac.protocols.push import ListenerSettings, PushFactory
from sac.services.acquisition import Acquisition
from sac.services.session import SessionSettings
from sac.services.spool import Spool
from sac.store.factory import store_at


async def main(address: str, spool_dir: str, port_file: str) -> None:
    store = store_at(address, MasterKey.from_environment())
    await store.open()
    spool = Spool(spool_dir)
    await spool.open()
    acquisition = Acquisition(store, discover_profiles().registry, reactor=reactor, spool=spool)
    acquisition.start(replay_every=0.5)
    factory = PushFactory(
        acquisition,
        store,
        reactor=reactor,
        settings=ListenerSettings(response_timeout=3.0),
        session=SessionSettings(name="sac-killable"),
    )
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
    Path(port_file + ".tmp").write_text(str(port.getHost().port))
    Path(port_file + ".tmp").rename(port_file)


if __name__ == "__main__":
    ensureDeferred(main(*sys.argv[1:4])).addErrback(lambda f: (f.printTraceback(), reactor.stop()))
    reactor.run()
