"""A meter's configuration page (issue 22): last known values, read now, a typed form per
setting with its refusal next to the field, the confirmation's before and after, the command
queued and followed, roles, and a secret never shown -- through Klein on a real store."""

from __future__ import annotations

import datetime as dt
import re

import pytest
import pytest_twisted
from markupsafe import escape
from twisted.internet.defer import Deferred

from sac.dlms import Obis
from sac.dlms.axdr import VisibleString, encode_data
from sac.store import NewMeter, Reading
from sac.web.openapi import openapi
from tests.web.conftest import Backend, Site, make_site
from tests.web.test_api import Api

LDN = "SET0000000000001"
PDR = Obis("0.0.96.1.10.255")
RANDOMISATION = Obis("0.1.25.9.0.255")
PIN = Obis("0.0.94.39.1.255")
SECRET = "4321"


@pytest.fixture
def site(backend: Backend) -> Site:
    return pytest_twisted.blockon(Deferred.fromCoroutine(make_site(backend)))


async def seed(site: Site) -> dt.datetime:
    """A meter whose PDR, push randomisation and (behind the SAC's back) PIN were read."""
    await site.store.meters.add(NewMeter(LDN, pdr="11111111111111"))
    at = dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC)
    raw = encode_data(VisibleString("11111111111111"))
    await site.store.readings.add(
        [
            Reading(LDN, PDR, 2, None, at, "poll", at, raw=raw),
            Reading(LDN, RANDOMISATION, 5, 120, at, "poll", at),
            Reading(LDN, PIN, 2, int(SECRET), at, "poll", at),  # a read-attribute's, say
        ]
    )
    return at


def row(page: str, key: str) -> str:
    found = re.search(rf'<tr id="s-{key}".*?</tr>', page, re.S)
    assert found, key
    return found.group(0)


@pytest_twisted.ensureDeferred
async def test_viewers_see_the_last_values_and_no_form(site: Site) -> None:
    await seed(site)
    viewer = await site.signed_in("vera")
    _, _, meter = await viewer.get(f"/meters/{LDN}")
    assert f'href="/meters/{LDN}/settings"' in meter
    code, _, page = await viewer.get(f"/meters/{LDN}/settings")
    assert code == 200
    pdr = row(page, "pdr")
    assert "<code>11111111111111</code>" in pdr and "2026-12-01 10:30" in pdr  # Italian time
    assert "<code>120</code>" in row(page, "push_randomisation")
    assert "not read yet" in row(page, "push_times") and "(s)" in row(page, "push_randomisation")
    assert "never set by the SAC" in row(page, "valve_pin") and SECRET not in page
    assert "/settings/edit" not in page and "Read all" not in page and "Read now" not in page
    for path, data in (
        ("edit", {"setting": "pdr", "value": "12345678901234"}),
        ("write", {"setting": "pdr", "value": "12345678901234", "confirm": LDN}),
        ("read", {"setting": "all"}),
    ):
        code, _, _ = await viewer.post(f"/meters/{LDN}/settings/{path}", data)
        assert code == 403, path
    assert await site.store.commands.recent(LDN) == []
    code, _, _ = await viewer.get("/meters/NOSUCHMETER00000/settings")
    assert code == 404


@pytest_twisted.ensureDeferred
async def test_a_refused_value_comes_back_next_to_its_field_and_nothing_is_queued(
    site: Site,
) -> None:
    await seed(site)
    operator = await site.signed_in("otto")
    for key, typed, said in (
        ("pdr", "12AB", "14 digits, not '12AB'"),
        ("push_times", "25:00", "'25:00' is not a time of day HH:MM"),
        ("push_randomisation", "3601", "3601 is not in 0..3600"),
    ):
        code, _, page = await operator.post(
            f"/meters/{LDN}/settings/edit", {"setting": key, "value": typed}
        )
        assert code == 400, key
        cells = row(page, key)
        assert f'<p class="error" id="e-{key}">{escape(said)}</p>' in cells
        assert f'value="{escape(typed)}"' in cells and 'aria-invalid="true"' in cells
        assert 'class="error"' not in row(page, "clock")  # only next to its own field
    assert await site.store.commands.recent(LDN) == []
    code, _, _ = await operator.post(f"/meters/{LDN}/settings/edit", {"setting": "nope"})
    assert code == 400


@pytest_twisted.ensureDeferred
async def test_a_change_shows_before_and_after_then_is_queued_and_followed(site: Site) -> None:
    await seed(site)
    operator = await site.signed_in("otto")
    code, _, page = await operator.post(
        f"/meters/{LDN}/settings/edit", {"setting": "push_times", "value": " 17:30,05:00 "}
    )
    assert code == 200 and "Change Push times?" in page
    assert re.search(r'id="before">not read yet', page)
    assert '<td id="after"><strong><code>05:00, 17:30</code>' in page  # normalised
    code, _, page = await operator.post(
        f"/meters/{LDN}/settings/edit", {"setting": "pdr", "value": "12345678901234"}
    )
    assert '<td id="before"><code>11111111111111</code>' in page
    assert '<td id="after"><strong><code>12345678901234</code>' in page
    assert await site.store.commands.recent(LDN) == []  # not before it is confirmed
    form = {"setting": "pdr", "value": "12345678901234", "confirm": "SET0000000000002"}
    code, _, _ = await operator.post(f"/meters/{LDN}/settings/write", form)
    assert code == 400  # the confirmation names another meter
    code, heads, _ = await operator.post(f"/meters/{LDN}/settings/write", {**form, "confirm": LDN})
    [command] = await site.store.commands.recent(LDN)
    assert code == 303 and heads["location"] == (
        f"/meters/{LDN}/settings?queued={command.id}#s-pdr"
    )
    assert command.kind == "set-setting" and command.requested_by == "otto"
    assert command.params["setting"] == "pdr" and command.params["text"] == "12345678901234"
    [line] = [e for e in await site.store.audit.log() if e.action == "queue set-setting"]
    assert (line.actor, line.target, line.detail) == ("otto", LDN, "pdr = 12345678901234")
    _, _, page = await operator.get(heads["location"].split("#")[0])
    pdr = row(page, "pdr")
    assert f'data-command="{command.id}"' in pdr and 'class="highlight"' in pdr
    assert '<span class="state s-pending" data-state>pending</span>' in pdr
    await site.store.commands.claim(LDN)
    done = "PDR (point of redelivery) set to 12345678901234, confirmed by reading it back"
    await site.store.commands.finish(command.id, True, done)
    _, _, page = await operator.get(f"/meters/{LDN}/settings")
    pdr = row(page, "pdr")
    assert "data-command" not in pdr and "s-done" in pdr and done in pdr
    _, _, body = await operator.get(f"/commands/{command.id}.json")
    assert '"state": "done"' in body and '"final": true' in body


@pytest_twisted.ensureDeferred
async def test_read_now_read_all_and_synchronise_the_clock(site: Site) -> None:
    await seed(site)
    operator = await site.signed_in("otto")
    code, heads, _ = await operator.post(f"/meters/{LDN}/settings/read", {"setting": "pdr"})
    [read] = await site.store.commands.recent(LDN)
    assert code == 303 and heads["location"].endswith(f"?queued={read.id}#s-pdr")
    assert (read.kind, read.params) == ("read-setting", {"setting": "pdr"})
    code, heads, _ = await operator.post(f"/meters/{LDN}/settings/read", {"setting": "all"})
    reads = await site.store.commands.recent(LDN)
    named = sorted(c.params["setting"] for c in reads[:-1])
    assert code == 303 and heads["location"].endswith("?reads=12#settings")
    assert len(named) == 12 and "valve_pin" not in named and "clock" in named
    code, _, _ = await operator.post(f"/meters/{LDN}/settings/read", {"setting": "valve_pin"})
    assert code == 400  # a secret is never read back
    _, _, page = await operator.get(f"/meters/{LDN}/settings?reads=12")
    assert "12 reads were queued" in page
    # a read the meter refuses: failed, with its answer in words
    await site.store.commands.claim(LDN)
    refused = "the meter refused: read-write-denied (the client may not read it)"
    newest = {c.params["setting"]: c for c in reversed(reads)}
    await site.store.commands.finish(newest["push_frame"].id, False, refused)
    _, _, page = await operator.get(f"/meters/{LDN}/settings")
    assert "s-failed" in row(page, "push_frame") and refused in row(page, "push_frame")
    code, _, page = await operator.post(f"/meters/{LDN}/settings/edit", {"setting": "clock"})
    assert code == 200 and "Synchronise the clock?" in page and "the SAC&#39;s time" in page
    code, heads, _ = await operator.post(
        f"/meters/{LDN}/settings/write", {"setting": "clock", "confirm": LDN}
    )
    sync = (await site.store.commands.recent(LDN, limit=1))[0]
    assert code == 303 and (sync.kind, sync.params) == ("sync-clock", {})
    _, _, page = await operator.get(f"/meters/{LDN}/settings")
    assert f'data-command="{sync.id}"' in row(page, "clock") and "sync-clock" in row(page, "clock")
    assert "Synchronise now…" in row(page, "clock")


@pytest_twisted.ensureDeferred
async def test_a_secret_is_typed_twice_and_never_shown(site: Site) -> None:
    await seed(site)
    operator = await site.signed_in("otto")
    path = f"/meters/{LDN}/settings/edit"
    code, _, page = await operator.post(
        path, {"setting": "valve_pin", "value": "1234", "again": "1235"}
    )
    assert code == 400 and "the two entries differ" in row(page, "valve_pin")
    assert "1234" not in page and "1235" not in page
    code, _, page = await operator.post(
        path, {"setting": "valve_pin", "value": "99999", "again": "99999"}
    )
    assert code == 400 and "not in 0..9999" in row(page, "valve_pin")
    assert 'value="99999"' not in page  # a secret's text is not sent back
    assert await site.store.commands.recent(LDN) == []
    code, heads, _ = await operator.post(
        path, {"setting": "valve_pin", "value": "2468", "again": "2468"}
    )
    [command] = await site.store.commands.recent(LDN)
    assert code == 303 and heads["location"].endswith(f"?queued={command.id}#s-valve_pin")
    assert command.params["text"] == "(hidden)"
    _, _, page = await operator.get(f"/meters/{LDN}/settings")
    assert "never set by the SAC" in row(page, "valve_pin")  # not until it is done
    await site.store.commands.claim(LDN)
    await site.store.commands.finish(command.id, True, "Valve PIN set to (hidden) (not read back)")
    _, _, page = await operator.get(f"/meters/{LDN}/settings")
    pin = row(page, "valve_pin")
    assert ">set <small>(the value is never shown)" in pin and "Read now" not in pin
    assert "2468" not in page and SECRET not in page
    said = " ".join(str(e.detail) for e in await site.store.audit.log())
    assert "valve_pin = (hidden)" in said and "2468" not in said


# --- the JSON API ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_the_api_gives_each_setting_its_value_typed_and_its_command(site: Site) -> None:
    at = await seed(site)
    operator = await site.signed_in("otto")
    await operator.post(f"/meters/{LDN}/settings/read", {"setting": "push_times"})
    await operator.post(
        f"/meters/{LDN}/settings/edit", {"setting": "valve_pin", "value": "2468", "again": "2468"}
    )
    secret, _ = await site.store.tokens.create("vera", "vera-ci")
    api = Api(site, secret)
    code, _, body = await api.call("GET", f"/api/v1/meters/{LDN}/settings")
    assert code == 200 and body["ldn"] == LDN and body["profile"] == "uni-ts-11291-12-2"
    items = {s["key"]: s for s in body["settings"]}
    assert list(items)[:3] == ["pdr", "clock", "push_times"]  # the profile's order
    pdr = items["pdr"]
    assert (pdr["text"], pdr["hint"], pdr["read_at"]) == (
        "11111111111111",
        "14 digits",
        at.isoformat(),
    )
    assert pdr["value"] == {"type": "visible-string", "value": "11111111111111"}
    assert pdr["last_command"] is None and pdr["set"] is None and pdr["command"] == "set-setting"
    spread = items["push_randomisation"]
    assert spread["value"] == {"type": "long-unsigned", "value": 120} and spread["unit"] == "s"
    times = items["push_times"]
    assert times["text"] is None and times["value"] is None and times["read_at"] is None
    assert times["last_command"]["kind"] == "read-setting"
    assert times["last_command"]["state"] == "pending" and times["last_command"]["result"] is None
    pin = items["valve_pin"]
    assert pin["secret"] and pin["set"] is False and pin["text"] is None and pin["value"] is None
    assert pin["last_command"]["kind"] == "set-setting"
    assert items["clock"]["command"] == "sync-clock"
    assert SECRET not in str(body) and "2468" not in str(body)
    code, _, body = await api.call("GET", "/api/v1/meters/NOSUCHMETER00000/settings")
    assert code == 404 and body["error"]["code"] == "not_found"


def test_the_openapi_document_declares_the_settings_route() -> None:
    doc = openapi(["uni-ts-11291-12-2"])
    get = doc["paths"]["/api/v1/meters/{ldn}/settings"]["get"]
    assert get["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SettingsOut"
    }
    schemas = doc["components"]["schemas"]
    assert set(schemas["SettingOut"]["properties"]) >= {"key", "text", "value", "last_command"}
    assert "SettingCommandOut" in schemas
