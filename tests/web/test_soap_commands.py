"""Commands through SOAP as an ERP calls them with zeep, on a real port, both stores:
RequestCommand of every kind with its typed parameters (a structure as typed JSON through
set-attribute and set-setting), refusals by their documented faults naming the field with
nothing queued, ListCommands by meter and state, CancelCommand and the cancel of a final
one, roles and audit lines; a command requested over SOAP carried out at the meter's push."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest_twisted
import requests

from sac.store import CommandState
from tests.acquisition.conftest import Sac, push_once, sacs  # noqa: F401
from tests.store.conftest import Backend
from tests.web.test_soap import erp_sac

DESTINATION = {  # push_setup.send_destination_and_method: tcp, "10.0.0.1:4059", A-XDR
    "type": "structure",
    "value": [
        {"type": "enum", "value": 0},
        {"type": "octet-string", "value": "31302e302e302e313a34303539"},
        {"type": "enum", "value": 0},
    ],
}
UTC = dt.UTC


def moves(status: Any) -> list[Any]:
    """A CommandStatus's history as zeep gives it (an array is a wrapper element)."""
    return list(status.history.TransitionInfo) if status.history else []


def commands(listed: Any) -> list[Any]:
    """ListCommands's answer as zeep gives it (its one member, unwrapped)."""
    return list(listed.CommandStatus) if listed else []


def every_kind() -> list[tuple[str, dict[str, Any] | None]]:
    start = dt.datetime(2026, 11, 1, tzinfo=UTC)
    return [
        ("valve-close", None),
        ("valve-enable-opening", {}),
        ("read-profile", {"object": "daily_profile", "from": start, "to": start + dt.timedelta(7)}),
        ("read-attribute", {"classId": 3, "obis": "7.0.13.2.0.255", "attribute": 2}),
        (
            "set-attribute",
            {
                "classId": 40,
                "obis": "0.1.25.9.0.255",
                "attribute": 3,
                "typedValue": json.dumps(DESTINATION),
            },
        ),
        (
            "set-attribute",
            {"classId": 1, "obis": "0.0.96.1.10.255", "attribute": 2, "value": "x", "valueType": "visible-string"},  # noqa: E501
        ),
        ("set-pdr", {"pdr": "01234567890123"}),
        ("sync-clock", None),
        ("set-setting", {"setting": "push_destination", "typedValue": json.dumps(DESTINATION)}),
        ("set-setting", {"setting": "push_times", "value": "05:00, 17:30"}),
        ("read-setting", {"setting": "push_window"}),
    ]  # fmt: skip


@pytest_twisted.ensureDeferred
async def test_every_kind_requested_with_typed_parameters_listed_and_cancelled(
    backend: Backend,
    sacs: list[Sac],  # noqa: F811
) -> None:
    erp = await erp_sac(backend, sacs, 2, pushing=0)
    ldn, other = (m.ldn for m in erp.fleet.meters)
    client = await erp.call(erp.client)
    ids = []
    for kind, params in every_kind():
        status = await erp.call(lambda k=kind, p=params: client.service.RequestCommand(ldn, k, p))
        assert (status.kind, status.ldn, status.state) == (kind, ldn, "pending")
        assert not status.final
        assert status.requestedBy == "erp" and [h.state for h in moves(status)] == ["pending"]
        stored = await erp.store.commands.get(status.id)
        assert json.loads(status.parameters) == stored.params
        ids.append(status.id)
    assert (await erp.store.commands.get(ids[4])).params["value"] == DESTINATION
    assert (await erp.store.commands.get(ids[8])).params["text"] == "tcp://10.0.0.1:4059"
    soon = dt.datetime.now(UTC) + dt.timedelta(days=1)
    late = await erp.call(
        lambda: client.service.RequestCommand(other, "sync-clock", {"expires": soon})
    )
    assert abs((late.expires - soon).total_seconds()) < 1
    # lists: newest first, by meter, by state (the element repeated)
    await erp.store.commands.claim(other)
    await erp.store.commands.finish(late.id, True, "clock set")
    listed = await erp.call(lambda: client.service.ListCommands())
    assert [c.id for c in commands(listed)] == [late.id, *reversed(ids)]
    mine = await erp.call(lambda: client.service.ListCommands(ldn, None, 3))
    assert [c.id for c in commands(mine)] == list(reversed(ids))[:3]
    done = await erp.call(lambda: client.service.ListCommands(None, ["done", "cancelled"]))
    assert [(c.id, c.state, c.final) for c in commands(done)] == [(late.id, "done", True)]
    # cancel: a pending one, then the same again and a done one (its state named)
    cancelled = await erp.call(lambda: client.service.CancelCommand(ids[0]))
    assert (cancelled.state, moves(cancelled)[-1].detail) == ("cancelled", "by erp")
    for final, state in ((ids[0], "cancelled"), (late.id, "done")):
        fault = await erp.fault(lambda final=final: client.service.CancelCommand(final))
        assert fault[0] == "Client.CommandFinal" and f"is {state}" in fault[1], fault
    fault = await erp.fault(lambda: client.service.CancelCommand(999_999))
    assert fault[0] == "Client.UnknownCommand"
    got = await erp.call(lambda: client.service.GetCommandStatus(late.id))
    assert [h.state for h in moves(got)] == ["pending", "sent", "done"]
    audit = [(e.actor, e.action, e.target) for e in await erp.store.audit.log(200)]
    assert audit.count(("erp", "soap RequestCommand", ldn)) == len(ids)
    assert ("erp", "queue set-attribute", ldn) in audit
    assert ("erp", "cancel command", str(ids[0])) in audit


@pytest_twisted.ensureDeferred
async def test_refusals_are_documented_faults_naming_the_field_and_queue_nothing(
    backend: Backend,
    sacs: list[Sac],  # noqa: F811
) -> None:
    erp = await erp_sac(backend, sacs, 1, pushing=0)
    [ldn] = (m.ldn for m in erp.fleet.meters)
    client = await erp.call(erp.client)
    bad = {"type": "structure", "value": [{"type": "long-unsigned", "value": 70000}]}
    ref = {"classId": 40, "obis": "0.1.25.9.0.255", "attribute": 3}
    past = dt.datetime.now(UTC) - dt.timedelta(hours=1)
    for kind, params, field in (
        ("set-attribute", {**ref, "typedValue": json.dumps(bad)}, "parameters.typedValue.value[0]"),
        ("set-attribute", {**ref, "typedValue": "{not json"}, "parameters.typedValue"),
        ("set-attribute", {**ref, "classId": 0, "typedValue": json.dumps(DESTINATION)}, "parameters.classId"),  # noqa: E501
        ("set-attribute", {**ref, "value": "1", "valueType": "float"}, "parameters.valueType"),
        ("set-setting", {"setting": "push_destination", "typedValue": json.dumps(bad)}, "parameters.typedValue"),  # noqa: E501
        ("set-setting", {"setting": "push_times", "value": "25:00"}, "parameters.value"),
        ("read-setting", {"setting": "nonsense"}, "parameters.setting"),
        ("valve-close", {"at": dt.datetime(2027, 1, 1, tzinfo=UTC)}, "parameters.at"),
        ("read-profile", {"object": "daily_profile"}, "parameters.from"),
        ("sync-clock", {"pdr": "01234567890123"}, "parameters.pdr"),
        ("sync-clock", {"expires": past}, "parameters.expires"),
    ):  # fmt: skip
        fault = await erp.fault(lambda k=kind, p=params: client.service.RequestCommand(ldn, k, p))
        assert fault[0] == "Client.InvalidParameter", (kind, params, fault)
        assert fault[1].startswith(f"{field}: "), (field, fault)
    fault = await erp.fault(lambda: client.service.RequestCommand("NOSUCHMETER00000", "sync-clock"))
    assert fault[0] == "Client.UnknownMeter"
    fault = await erp.fault(lambda: client.service.ListCommands(None, ["lost"]))
    assert fault[0] == "Client.InvalidParameter" and fault[1].startswith("state: ")
    fault = await erp.fault(lambda: client.service.ListCommands("NOSUCHMETER00000"))
    assert fault[0] == "Client.UnknownMeter"
    fault = await erp.fault(lambda: client.service.ListCommands(None, None, 5000))
    assert fault[0] == "Client.PageTooLarge"
    # an unknown kind never reaches the SAC's code: the WSDL's enumeration refuses it
    fault = await erp.fault(lambda: client.service.RequestCommand(ldn, "valve-open"))
    assert fault[0].startswith("Client")
    # a viewer lists but may not request or cancel
    viewer = await erp.call(lambda: erp.client("auditor"))
    fault = await erp.fault(lambda: viewer.service.RequestCommand(ldn, "sync-clock"))
    assert fault[0] == "Client.Forbidden"
    assert commands(await erp.call(lambda: viewer.service.ListCommands(ldn))) == []
    assert await erp.store.commands.recent() == []
    refused = [e.detail for e in await erp.store.audit.log(50) if e.action == "soap RequestCommand"]
    assert any(d.startswith("refused: Client.InvalidParameter parameters.classId") for d in refused)
    text = await erp.call(lambda: requests.get(erp.wsdl, timeout=10).text)
    for fault_name in ("InvalidParameterFault", "CommandFinalFault", "UnknownCommandFault"):
        assert f'name="{fault_name}"' in text
    assert "typedValue" in text and "Client.InvalidParameter naming it" in text


@pytest_twisted.ensureDeferred
async def test_a_command_requested_over_soap_is_done_at_the_meters_push(
    backend: Backend,
    sacs: list[Sac],  # noqa: F811
) -> None:
    erp = await erp_sac(backend, sacs, 1, pushing=0)
    [meter] = erp.fleet.meters
    client = await erp.call(erp.client)
    status = await erp.call(lambda: client.service.RequestCommand(meter.ldn, "sync-clock"))
    typed = {"setting": "push_destination", "typedValue": json.dumps(DESTINATION)}
    setting = await erp.call(lambda: client.service.RequestCommand(meter.ldn, "set-setting", typed))
    meter.clock_offset = -3600.0  # an hour late
    await push_once(erp.push_port, meter)
    done = await erp.call(lambda: client.service.GetCommandStatus(status.id))
    assert (done.state, done.final) == ("done", True), done.result
    assert abs(meter.clock_offset) < 2
    assert (await erp.store.commands.get(status.id)).state is CommandState.DONE
    done = await erp.call(lambda: client.service.GetCommandStatus(setting.id))
    assert done.state == "done" and done.result.endswith("confirmed by reading it back")
    assert meter.settings.destination == (0, b"10.0.0.1:4059", 0)
