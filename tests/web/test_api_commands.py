"""Commands through the JSON API (/api/v1) on both stores: any kind queued with its typed
parameters (a structure in typed JSON through set-attribute and set-setting), bad input
refused by field with nothing queued, lists by meter and state, one command with its
history, cancel and the cancel of a final one, roles and audit lines; and one command queued
through the API carried out by a simulated meter's push."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest_twisted

from sac.store import Actor, CommandState, NewMeter, Role
from sac.web.app import Web, WebSettings
from tests.acquisition.conftest import REGISTRY, Sac, push_once, sacs, started  # noqa: F401
from tests.web.conftest import Backend, Site
from tests.web.test_api import Api, Tokens, site, tokens  # noqa: F401 -- fixtures

GENERIC, SCRIPTED = "CMD0000000000001", "CMD0000000000002"
DESTINATION = {  # push_setup.send_destination_and_method: tcp, "10.0.0.1:4059", A-XDR
    "type": "structure",
    "value": [
        {"type": "enum", "value": 0},
        {"type": "octet-string", "value": "31302e302e302e313a34303539"},
        {"type": "enum", "value": 0},
    ],
}
SOON = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).isoformat()
# one command of every kind, for the generic profile's meter (an IC 70 valve)
EVERY_KIND: list[tuple[str, dict[str, Any]]] = [
    ("valve-close", {}),
    ("valve-enable-opening", {}),
    ("read-profile", {"object": "daily_profile", "from": "2026-11-01T00:00:00Z", "to": SOON}),
    ("read-attribute", {"class_id": 3, "obis": "7.0.13.2.0.255", "attribute": 2}),
    (
        "set-attribute",
        {"class_id": 40, "obis": "0.1.25.9.0.255", "attribute": 3, "value": DESTINATION},
    ),
    ("set-pdr", {"pdr": "01234567890123"}),
    ("sync-clock", {}),
    ("set-setting", {"setting": "push_destination", "value": DESTINATION}),
    ("set-setting", {"setting": "push_times", "value": "05:00, 17:30"}),
    ("read-setting", {"setting": "push_window"}),
]


async def meters(on: Site) -> None:
    await on.store.meters.add(NewMeter(GENERIC, profile="uni-ts-11291-12-2"), Actor("t"))
    await on.store.meters.add(NewMeter(SCRIPTED, profile="honeywell-ei7"), Actor("t"))


def path(ldn: str = GENERIC) -> str:
    return f"/api/v1/meters/{ldn}/commands"


@pytest_twisted.ensureDeferred
async def test_every_kind_is_queued_with_its_typed_parameters(
    site: Site,  # noqa: F811
    tokens: Tokens,  # noqa: F811
) -> None:
    await meters(site)
    api = tokens.client("otto")
    ids = []
    for kind, params in EVERY_KIND:
        code, _, body = await api.call("POST", path(), {"kind": kind, "params": params})
        assert code == 201, (kind, body)
        assert (body["kind"], body["ldn"], body["state"], body["final"]) == (
            kind,
            GENERIC,
            "pending",
            False,
        )
        assert body["requested_by"] == f"otto (API token #{tokens.ids['otto']} otto-ci)"
        assert [h["state"] for h in body["history"]] == ["pending"]
        stored = await site.store.commands.get(body["id"])
        assert stored.params == body["params"] and stored.kind == kind
        ids.append(body["id"])
    # the structures are stored as the typed JSON they came in
    by_id = {i: await site.store.commands.get(i) for i in ids}
    assert by_id[ids[4]].params["value"] == DESTINATION
    assert by_id[ids[7]].params == {
        "setting": "push_destination",
        "value": DESTINATION,
        "text": "tcp://10.0.0.1:4059",
    }
    assert by_id[ids[8]].params["value"]["type"] == "array"  # the form's text, typed
    # a scheduled-script valve takes a time; expires is kept
    at = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=3)).isoformat()
    code, _, body = await api.call(
        "POST", path(SCRIPTED), {"kind": "valve-close", "params": {"at": at}, "expires": SOON}
    )
    assert code == 201 and body["params"] == {"at": at}
    assert body["expires"] == dt.datetime.fromisoformat(SOON).isoformat()
    # every queue is a line of the audit trail, by the token's user
    audit = [(e.action, e.target) for e in await site.store.audit.log(50)]
    assert audit.count(("queue set-setting", GENERIC)) == 2
    assert ("queue valve-close", SCRIPTED) in audit


@pytest_twisted.ensureDeferred
async def test_bad_input_names_the_field_and_queues_nothing(
    site: Site,  # noqa: F811
    tokens: Tokens,  # noqa: F811
) -> None:
    await meters(site)
    api = tokens.client("otto")
    bad_value = {"type": "structure", "value": [{"type": "enum", "value": 256}]}
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()
    ref = {"class_id": 40, "obis": "0.1.25.9.0.255", "attribute": 3}
    for body, field in (
        ({"kind": "valve-open"}, "kind"),
        ({"kind": 7}, "kind"),
        ({"params": {}}, "kind"),
        ({"kind": "sync-clock", "params": []}, "params"),
        ({"kind": "valve-close", "params": {"at": "2026-12-01T10:00:00+01:00"}}, "params.at"),
        ({"kind": "set-pdr", "params": {"pdr": "123"}}, "params.pdr"),
        ({"kind": "set-attribute", "params": {**ref, "value": bad_value}}, "params.value.value[0]"),
        ({"kind": "set-attribute", "params": {**ref, "class_id": 0, "value": 1}}, "params.class_id"),  # noqa: E501
        (
            {"kind": "set-setting", "params": {"setting": "push_destination", "value": bad_value}},
            "params.value",
        ),
        ({"kind": "set-setting", "params": {"setting": "push_times", "value": "25:00"}}, "params.value"),  # noqa: E501
        ({"kind": "read-setting", "params": {"setting": "nonsense"}}, "params.setting"),
        ({"kind": "sync-clock", "expires": past}, "expires"),
        ({"kind": "sync-clock", "expires": "tomorrow"}, "expires"),
    ):  # fmt: skip
        code, _, answer = await api.call("POST", path(), body)
        assert code == 422, (body, answer)
        [item] = answer["error"]["items"]
        assert item["field"] == field, (body, item)
        assert item["message"].startswith(f"{field}: "), item
    code, _, answer = await api.call("POST", path(), {"kind": "sync-clock", "when": "now"})
    assert code == 400 and answer["error"]["code"] == "invalid_body"
    code, _, answer = await api.call("POST", path("NOSUCHMETER00000"), {"kind": "sync-clock"})
    assert code == 404 and answer["error"]["code"] == "not_found"
    assert await site.store.commands.recent() == []
    assert not [e for e in await site.store.audit.log(50) if e.action.startswith("queue")]


@pytest_twisted.ensureDeferred
async def test_lists_by_meter_and_state_one_with_its_history_and_cancel(
    site: Site,  # noqa: F811
    tokens: Tokens,  # noqa: F811
) -> None:
    await meters(site)
    api, viewer = tokens.client("otto"), tokens.client("vera")
    made = []
    for ldn, kind in ((GENERIC, "sync-clock"), (SCRIPTED, "valve-close"), (GENERIC, "set-pdr")):
        params = {"pdr": "01234567890123"} if kind == "set-pdr" else {}
        code, _, body = await api.call("POST", path(ldn), {"kind": kind, "params": params})
        made.append(body["id"])
    first, second, third = made
    # one claimed and done, as a session would
    await site.store.commands.claim(SCRIPTED)
    await site.store.commands.finish(second, True, "valve control_state 0 confirms close")
    code, _, body = await viewer.call("GET", "/api/v1/commands")
    assert code == 200 and [c["id"] for c in body["commands"]] == [third, second, first]
    assert "history" not in body["commands"][0]
    code, _, body = await viewer.call("GET", path(GENERIC))
    assert [c["id"] for c in body["commands"]] == [third, first]
    code, _, body = await viewer.call("GET", f"/api/v1/commands?ldn={SCRIPTED}&state=done")
    assert [(c["id"], c["state"], c["final"]) for c in body["commands"]] == [(second, "done", True)]
    for query in ("state=done&state=pending", "state=done,pending"):
        code, _, body = await viewer.call("GET", f"/api/v1/commands?{query}&limit=2")
        assert [c["id"] for c in body["commands"]] == [third, second], query
    code, _, body = await viewer.call("GET", "/api/v1/commands?state=lost")
    assert code == 400 and "state" in body["error"]["message"]
    code, _, body = await viewer.call("GET", "/api/v1/commands?limit=0")
    assert code == 400 and "limit" in body["error"]["message"]
    code, _, body = await viewer.call("GET", path("NOSUCHMETER00000"))
    assert code == 404
    code, _, body = await viewer.call("GET", f"/api/v1/commands/{second}")
    assert [h["state"] for h in body["history"]] == ["pending", "sent", "done"]
    assert body["result"] == "valve control_state 0 confirms close"
    assert body["history"][-1]["detail"] == "valve control_state 0 confirms close"
    code, _, body = await viewer.call("GET", "/api/v1/commands/999999")
    assert code == 404 and body["error"]["message"] == "no command 999999"
    # a viewer neither queues nor cancels
    code, _, body = await viewer.call("POST", path(), {"kind": "sync-clock"})
    assert code == 403 and "operator" in body["error"]["message"]
    code, _, body = await viewer.call("POST", f"/api/v1/commands/{first}/cancel")
    assert code == 403
    # cancelled by an operator: its history says by whom; a final one is refused by its state
    code, _, body = await api.call("POST", f"/api/v1/commands/{first}/cancel")
    assert code == 200 and (body["state"], body["final"]) == ("cancelled", True)
    assert body["history"][-1]["detail"].startswith("by otto (API token")
    code, _, body = await api.call("POST", f"/api/v1/commands/{second}/cancel")
    assert code == 409 and body["error"]["code"] == "conflict"
    assert "is done" in body["error"]["message"]
    code, _, body = await api.call("POST", "/api/v1/commands/999999/cancel")
    assert code == 404
    assert (await site.store.commands.get(second)).state is CommandState.DONE
    audit = [(e.action, e.target) for e in await site.store.audit.log(50)]
    assert audit.count(("cancel command", str(first))) == 1
    assert ("cancel command", str(second)) not in audit


@pytest_twisted.ensureDeferred
async def test_a_pin_queued_through_the_api_is_never_shown(
    site: Site,  # noqa: F811
    tokens: Tokens,  # noqa: F811
) -> None:
    await meters(site)
    api = tokens.client("otto")
    body = {"kind": "set-setting", "params": {"setting": "valve_pin", "value": "4711"}}
    code, _, answer = await api.call("POST", path(), body)
    assert code == 201 and answer["params"]["value"] == "(hidden)"
    for route in (f"/api/v1/commands/{answer['id']}", "/api/v1/commands", path()):
        await api.call("GET", route)
    assert len(api.seen) == 4 and not any("4711" in text for text in api.seen)


WINDOW = {  # push_setup.communication_window: daily, 05:00 to 06:00
    "type": "array",
    "value": [
        {
            "type": "structure",
            "value": [
                {"type": "octet-string", "value": "ffffffffff050000008000ff"},
                {"type": "octet-string", "value": "ffffffffff060000008000ff"},
            ],
        }
    ],
}


@pytest_twisted.ensureDeferred
async def test_commands_queued_through_the_api_are_carried_out_at_the_meters_push(
    backend: Backend,
    sacs: list[Sac],  # noqa: F811
) -> None:
    store, fleet, _sac, port = await started(backend, sacs)
    [meter] = fleet.meters
    await store.users.add("otto", "an operator's password", Role.OPERATOR)
    secret, _ = await store.tokens.create("otto", "erp")
    web = Site(store, Web(store, REGISTRY, settings=WebSettings(secure_cookies=False)))
    api = Api(web, secret)
    window = {"class_id": 40, "obis": "0.1.25.9.0.255", "attribute": 4, "value": WINDOW}
    ids = []
    for kind, params in (
        ("set-pdr", {"pdr": "09876543210987"}),
        ("set-setting", {"setting": "push_destination", "value": DESTINATION}),
        ("set-attribute", window),
    ):
        body = {"kind": kind, "params": params}
        code, _, queued = await api.call("POST", f"/api/v1/meters/{meter.ldn}/commands", body)
        assert code == 201 and queued["state"] == "pending", queued
        ids.append(queued["id"])
    assert meter.settings.windows == ()
    await push_once(port, meter)  # the meter calls in: its session carries the commands out
    done = []
    for command_id in ids:
        code, _, answer = await api.call("GET", f"/api/v1/commands/{command_id}")
        assert (answer["state"], answer["final"], answer["attempts"]) == ("done", True, 1), answer
        assert [h["state"] for h in answer["history"]] == ["pending", "sent", "done"]
        done.append(answer["result"])
    assert done[0].startswith("PDR (point of redelivery) set to 09876543210987")
    assert done[1].endswith("set to tcp://10.0.0.1:4059, confirmed by reading it back")
    assert meter.pdr == "09876543210987"
    assert meter.settings.destination == (0, b"10.0.0.1:4059", 0)
    assert len(meter.settings.windows) == 1
    code, _, listed = await api.call("GET", f"/api/v1/meters/{meter.ldn}/commands?state=done")
    assert [c["id"] for c in listed["commands"]] == ids[::-1]
