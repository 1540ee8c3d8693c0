"""The SAC's commands change a simulated meter's settings in a push session, end to end over
loopback TCP (issue 22): the clock sync (within 2 s, Italian deviation sign), a generic SET
of the valve PIN, the push randomisation and the end-of-billing start, and a refused one."""

from __future__ import annotations

import datetime as dt
import time

import pytest_twisted

from sac.dlms.cosemtime import CosemDateTime
from sac.simulator.life import ITALY
from sac.store import Actor, CommandState
from tests.acquisition.conftest import Backend, Sac, push_once, started

OPERATOR = Actor("olivia", "192.0.2.9")
BILLING = "ffff030fff0600000080 00ff".replace(" ", "")  # 15 March 06:00, any year


def setting(class_id: int, obis: str, attribute: int, kind: str, value: object) -> dict:
    return dict(class_id=class_id, obis=obis, attribute=attribute, type=kind, value=value)


@pytest_twisted.ensureDeferred
async def test_a_push_session_applies_the_sacs_settings_to_the_meter(
    backend: Backend, sacs: list[Sac]
) -> None:
    store, fleet, _sac, port = await started(backend, sacs)
    [m] = fleet.meters
    m.clock_offset = -2 * 3600 - 13  # the meter runs 2 h behind
    queued = {
        "sync": ("sync-clock", {}),
        "pin": ("set-attribute", setting(1, "0.0.94.39.1.255", 2, "long-unsigned", 4321)),
        "spread": ("set-attribute", setting(40, "0.1.25.9.0.255", 5, "long-unsigned", 900)),
        "billing": ("set-attribute", setting(1, "0.0.94.39.11.255", 2, "octet-string", BILLING)),
        "bad pin": ("set-attribute", setting(1, "0.0.94.39.1.255", 2, "long-unsigned", 10_000)),
    }
    ids = {}
    for name, (kind, params) in queued.items():
        ids[name] = (await store.commands.queue(m.ldn, kind, params, OPERATOR)).id
    await push_once(port, m)
    done = {name: await store.commands.get(i) for name, i in ids.items()}
    for name in ("sync", "pin", "spread", "billing"):
        assert done[name].state is CommandState.DONE, (name, done[name].result)
    assert done["bad pin"].state is CommandState.FAILED
    assert "other-reason" in (done["bad pin"].result or "")
    assert abs(m.now() - time.time()) < 2
    read = CosemDateTime.from_bytes(m._date_time(m.now()))
    italy = dt.datetime.now(ITALY).utcoffset()
    assert italy is not None and read.deviation == italy.total_seconds() // 60  # +60 or +120
    assert (m.settings.valve_pin, m.settings.randomisation) == (4321, 900)
    assert m.settings.billing_start.hex() == BILLING
    assert sorted(code for _t, _n, code in m.param_events) == [15, 15, 108]
