"""What the configuration page asks of the store, on every backend: the newest reading of
each of a meter's settings' attributes, and the newest command naming each setting -- each
in one query."""

from __future__ import annotations

import datetime as dt

import pytest_twisted

from sac.dlms import Obis
from sac.profiles import discover_profiles
from sac.services import commands as command_service
from sac.store import Actor, CommandState, Reading
from tests.store.conftest import Backend
from tests.store.test_operations import ldn, opened

PROFILE = discover_profiles().registry["uni-ts-11291-12-2"]
PDR = Obis("0.0.96.1.10.255")
CLOCK = Obis("0.0.1.0.0.255")
OTTO = Actor("otto", "192.0.2.9")
T0 = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)


def reading(meter: str, obis: Obis, attribute: int, minutes: int, raw: bytes) -> Reading:
    at = T0 + dt.timedelta(minutes=minutes)
    return Reading(meter, obis, attribute, None, at, "poll", at, raw=raw)


@pytest_twisted.ensureDeferred
async def test_the_newest_reading_of_each_pair_in_one_query(backend: Backend) -> None:
    store = await opened(backend, meters=2)
    await store.readings.add(
        [
            reading(ldn(0), PDR, 2, 0, b"\x0a\x01A"),
            reading(ldn(0), PDR, 2, 30, b"\x0a\x01C"),  # the newest by capture time
            reading(ldn(0), PDR, 2, 10, b"\x0a\x01B"),  # stored last, captured before
            reading(ldn(0), CLOCK, 2, 5, b"\x09\x01\x01"),
            reading(ldn(0), CLOCK, 3, 50, b"\x10\x00\x3c"),  # another attribute: not asked
            reading(ldn(1), PDR, 2, 90, b"\x0a\x01Z"),  # another meter's
        ]
    )
    await store.readings.add([Reading(ldn(0), PDR, 2, None, T0, "poll", None, raw=b"\x00")])
    asked = [(PDR, 2), (CLOCK, 2), (Obis("0.0.94.39.8.255"), 2)]  # the last never read
    newest = await store.readings.newest(ldn(0), asked)
    assert set(newest) == {(PDR, 2), (CLOCK, 2)}
    assert newest[(PDR, 2)].raw == b"\x0a\x01C" and newest[(PDR, 2)].ldn == ldn(0)
    assert newest[(PDR, 2)].captured == T0 + dt.timedelta(minutes=30)
    assert newest[(CLOCK, 2)].raw == b"\x09\x01\x01" and newest[(CLOCK, 2)].attribute == 2
    assert (await store.readings.newest(ldn(1), asked))[(PDR, 2)].raw == b"\x0a\x01Z"
    assert await store.readings.newest("FIO9999999999999", asked) == {}
    assert await store.readings.newest(ldn(0), []) == {}


async def queue(store, meter: str, kind: str, **params: object):  # type: ignore[no-untyped-def]
    return await command_service.queue(store, PROFILE, meter, kind, params, OTTO, now=T0)


@pytest_twisted.ensureDeferred
async def test_the_newest_command_naming_each_setting_in_one_query(backend: Backend) -> None:
    store = await opened(backend, meters=2)
    await queue(store, ldn(0), "read-setting", setting="pdr")
    set_pdr = await queue(store, ldn(0), "set-setting", setting="pdr", value="12345678901234")
    read_times = await queue(store, ldn(0), "read-setting", setting="push_times")
    await queue(store, ldn(0), "sync-clock")
    read_clock = await queue(store, ldn(0), "read-setting", setting="clock")  # after the sync
    await queue(store, ldn(1), "set-setting", setting="push_window", value="")  # another meter
    pin = await queue(store, ldn(0), "set-setting", setting="valve_pin", value="4321")
    await queue(store, ldn(0), "valve-close")  # names no setting
    keys = [s.key for s in PROFILE.settings]
    latest = await store.commands.latest_by_setting(ldn(0), keys, {"sync-clock": "clock"})
    assert {k: c.id for k, c in latest.items()} == {
        "pdr": set_pdr.id,
        "push_times": read_times.id,
        "clock": read_clock.id,
        "valve_pin": pin.id,
    }
    assert latest["pdr"].params["text"] == "12345678901234"
    # "push" is no setting, and the start of several: it names none of them
    assert await store.commands.latest_by_setting(ldn(0), ["push"]) == {}
    sync = await queue(store, ldn(0), "sync-clock")
    latest = await store.commands.latest_by_setting(ldn(0), ["clock"], {"sync-clock": "clock"})
    assert latest["clock"].id == sync.id  # the newest of either kind
    # of some states only: the PIN set once (done), then a failed attempt
    await store.commands.claim(ldn(0))
    await store.commands.finish(pin.id, True, "Valve PIN set to (hidden) (not read back)")
    again = await queue(store, ldn(0), "set-setting", setting="valve_pin", value="1111")
    await store.commands.claim(ldn(0))
    await store.commands.finish(again.id, False, "refused: read-write-denied")
    done = await store.commands.latest_by_setting(ldn(0), ["valve_pin"], states=[CommandState.DONE])
    assert done["valve_pin"].id == pin.id
    latest = await store.commands.latest_by_setting(ldn(0), ["valve_pin"])
    assert latest["valve_pin"].id == again.id
    assert await store.commands.latest_by_setting("FIO9999999999999", keys) == {}
    # each queueing is audited with the setting and the value's text, a secret's hidden
    said = [(e.action, e.detail) for e in await store.audit.log(50)]
    assert ("queue set-setting", "pdr = 12345678901234") in said
    assert ("queue read-setting", "push_times") in said
    assert ("queue set-setting", "valve_pin = (hidden)") in said
    assert not [d for _, d in said if d and ("4321" in d or "1111" in d)]
