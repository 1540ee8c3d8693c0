"""The SAC killed with SIGKILL in the middle of a push burst, and started again: no reading
of a push the meter saw acknowledged is lost, and no invocation counter is ever sent twice."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.task import deferLater

from sac.dlms import Obis
from sac.dlms.axdr import OctetString
from sac.dlms.security import CipheredApdu
from sac.dlms.wrapper import WrapperFramer
from sac.simulator.session import MeterProtocol
from sac.store import Actor, CommandState
from tests.acquisition.conftest import Backend, make_fleet, provision, utc
from tests.run.twistd import Twistd, port
from tests.store.conftest import MASTER

# kill -9 of this test's own twistd (PostgreSQL is not touched: not serial)
pytestmark = pytest.mark.slow

ENV = {"SAC_MASTER_KEY": MASTER.secret.hex()}

INDEX = Obis("7.0.13.2.0.255")


class Watched(MeterProtocol):
    """A meter that notes the UNIX time of its push and every counter the SAC sends it."""

    seen: dict[str, list[int]] = {}

    def connectionMade(self) -> None:
        template, self.push_template = self.push_template, None
        super().connectionMade()
        self.meter.advance()
        values = self.meter.compact_values()
        layout = self.meter.profile.layouts[template]
        self.unix_time = values["unix_time"]
        self.management.notify(
            OctetString(layout.encode({f.name: values[f.name] for f in layout.fields}))
        )
        self._flush(self.management)
        self.watch = WrapperFramer(4096)

    def dataReceived(self, data: bytes) -> None:
        for pdu in self.watch.feed(data):
            if pdu.source == 1 and pdu.apdu[:1] == b"\xdb":
                ic = CipheredApdu.from_bytes(pdu.apdu).invocation_counter
                self.seen.setdefault(self.meter.ldn, []).append(ic)
        super().dataReceived(data)


async def session(port: int, meter: Any) -> tuple[bool, int]:
    """(acknowledged, the push's UNIX time)."""
    protocol = Watched(meter, push_template=meter.profile.push_templates[0], reactor=reactor)
    ended: Deferred[Any] = Deferred()
    lost = protocol.connectionLost

    def on_lost(reason: Any = None) -> None:
        lost(reason)
        ended.callback([reason])

    protocol.connectionLost = on_lost  # type: ignore[method-assign]
    try:
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=2), protocol)
    except Exception:  # the SAC is down: not acknowledged
        return False, 0
    [reason] = await ended
    return bool(reason.check(ConnectionDone)), protocol.unix_time


def start_sac(address: str, tmp_path: Path, run: int = 1) -> Twistd:
    """``twistd -n sac`` on ``address``: push only, on a free port of 127.0.0.1; its JSON
    log in ``sac-<run>.log`` (a file: written line by line, it survives the SIGKILL)."""
    config = tmp_path / "sac.ini"
    log = tmp_path / f"sac-{run}.log"
    config.write_text(
        f"[store]\naddress = {address}\nconnections = 2\n"
        f"[push]\nlisten = tcp:0:interface=127.0.0.1\nspool = {tmp_path / 'spool'}\n"
        f"[web]\nlisten =\n[poll]\nenabled = no\n[log]\nformat = json\nfile = {log}\n"
    )
    return Twistd(Path(sys.executable).parent, config, tmp_path, ENV, log_file=log)


async def port_of(sac: Twistd) -> int:
    return port((await sac.wait_for("SAC ready"))["push"])


@pytest_twisted.ensureDeferred
async def test_sigkill_mid_burst_loses_no_acknowledged_reading(
    backend: Backend, tmp_path: Path
) -> None:
    store = backend.make()
    await store.open()
    fleet = make_fleet(40)
    await provision(store, fleet)
    for m in fleet.meters[::4]:  # commands: our counters are in play
        await store.commands.queue(m.ldn, "valve-close", {}, Actor("olivia"), priority=20)
    address = backend.dsn if backend.kind == "postgresql" else f"sqlite:{backend.path}"
    acknowledged: list[tuple[str, int]] = []
    Watched.seen = {}

    async def burst(port: int, meters: list[Any]) -> None:
        results = [session(port, m) for m in meters]
        for m, result in zip(meters, results, strict=True):
            ok, unix_time = await result
            if ok:
                acknowledged.append((m.ldn, unix_time))

    sac = start_sac(address, tmp_path)
    runs = [sac]  # both processes' logs, for a failure's message
    try:
        port = await port_of(sac)
        await burst(port, fleet.meters[:20])
        # the second half calls in at once; the SAC dies in the middle of it
        pending = [Deferred.fromCoroutine(burst(port, fleet.meters[20:]))]
        await deferLater(reactor, 0.05, lambda: None)
        sac.kill()  # SIGKILL
        for d in pending:
            await d
        sac = start_sac(address, tmp_path, run=2)
        runs.append(sac)
        port = await port_of(sac)
        await deferLater(reactor, 1.1, lambda: None)  # a new second: new push times
        await burst(port, fleet.meters)
    finally:
        sac.kill()
    await store.close()
    check = backend.make()
    await check.open()
    assert len(acknowledged) >= 60
    for ldn, unix_time in acknowledged:
        readings = await check.readings.last(ldn, INDEX, limit=50)
        assert utc(unix_time) in {r.captured for r in readings}, (
            ldn,
            unix_time,
            [
                f"run {n}: {e['message']}"
                for n, run in enumerate(runs, 1)
                for e in run.events()
                if ldn in e["message"] or "spool" in e["message"] or e["level"] != "info"
            ],
        )
    for m in fleet.meters:
        counters = Watched.seen.get(m.ldn, [])
        assert counters == sorted(set(counters)), f"{m.ldn}: a counter sent twice: {counters}"
        ours, _ = await check.counters.last(m.ldn, 1)
        assert not counters or ours >= counters[-1]  # every counter sent was reserved first
    # a command the killed process had claimed stays "sent" until housekeeping gives it back
    states = [c.state for c in await check.commands.recent()]
    assert set(states) <= {CommandState.DONE, CommandState.SENT} and len(states) == 10
    requeued = await check.commands.requeue_stale(dt.timedelta(0))
    assert requeued == states.count(CommandState.SENT)
