"""The JSON API's view of a meter's settings (``GET /api/v1/meters/{ldn}/settings``, routed by
:mod:`sac.web.api`): what the configuration page shows (:func:`sac.web.settingspage.gather`)
-- each setting's last known value as text and as typed JSON (:mod:`sac.dlms.typedjson`),
when it was read, and its newest command -- declared here as msgspec structs, whose JSON
Schema is the OpenAPI document's (:func:`settings_schemas`, :func:`settings_paths`).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec

from sac.store import Command, UnknownMeter
from sac.web import display, settingspage
from sac.web.errors import ApiError, json_answer

__all__ = ["SettingOut", "SettingsOut", "meter_settings", "settings_paths", "settings_schemas"]

_Time = Annotated[str, msgspec.Meta(description="UTC, ISO-8601 with offset")]


class SettingCommandOut(msgspec.Struct, forbid_unknown_fields=True):
    """The newest command for a setting: set-setting, read-setting, or the kind that writes
    it (sync-clock for the clock); ``result`` is the meter's answer in words once it ends
    (done: with the value read back; failed: why)."""

    id: int
    kind: str
    state: Annotated[
        str,
        msgspec.Meta(
            extra_json_schema={
                "enum": ["pending", "sent", "done", "failed", "expired", "cancelled"]
            }
        ),
    ]
    result: str | None
    requested_by: str
    created: _Time
    finished: _Time | None


class SettingOut(msgspec.Struct, forbid_unknown_fields=True):
    """One setting of the meter's profile and what the SAC knows of it."""

    key: Annotated[str, msgspec.Meta(description="what set-setting's 'setting' names")]
    label: str
    unit: str
    help: str
    hint: Annotated[str, msgspec.Meta(description="how its value is written as text")]
    secret: Annotated[bool, msgspec.Meta(description="never shown; 'set' says if it was")]
    command: Annotated[str, msgspec.Meta(description="the command kind that writes it")]
    text: Annotated[str | None, msgspec.Meta(description="the last value read, as text")]
    value: Annotated[
        dict[str, Any] | None,
        msgspec.Meta(description="the same as typed JSON ({type, value}); null: none"),
    ]
    read_at: Annotated[
        str | None,
        msgspec.Meta(description="when it was read (a secret: when a command set it)"),
    ]
    set: Annotated[bool | None, msgspec.Meta(description="a secret: whether a command set it")]
    last_command: SettingCommandOut | None


class SettingsOut(msgspec.Struct, forbid_unknown_fields=True):
    """A meter's settings (its profile's), in the profile's order."""

    ldn: str
    profile: str
    settings: list[SettingOut]


def _iso(t: dt.datetime | None) -> str | None:
    return None if t is None else t.astimezone(dt.UTC).isoformat()


def _command(c: Command | None) -> SettingCommandOut | None:
    if c is None:
        return None
    return SettingCommandOut(
        c.id,
        c.kind,
        c.state.value,
        c.result,
        c.requested_by,
        _iso(c.created) or "",
        _iso(c.finished),
    )


def setting_out(item: settingspage.Item) -> SettingOut:
    s = item.setting
    return SettingOut(
        key=s.key,
        label=s.label,
        unit=s.unit,
        help=s.help,
        hint=s.shape.hint,
        secret=s.secret,
        command=s.command,
        text=item.text,
        value=item.typed,
        read_at=_iso(item.read_at),
        set=item.is_set,
        last_command=_command(item.command),
    )


async def meter_settings(api: Any, request: Any, ldn: str) -> bytes:
    """The answer of ``GET /meters/{ldn}/settings``; 404 for an unknown meter."""
    meter = await api.store.meters.get(ldn)
    if meter is None:
        raise UnknownMeter(ldn)
    profile = display.profile_of(api.registry, meter.profile)
    if profile is None:
        raise ApiError(409, "conflict", f"the meter's profile {meter.profile} is not installed")
    items = await settingspage.gather(api.store, profile, ldn)
    out = SettingsOut(ldn, meter.profile, [setting_out(i) for i in items])
    return json_answer(request, 200, msgspec.to_builtins(out))


def settings_schemas() -> dict[str, Any]:
    """The OpenAPI schemas of the answer, from its declaration."""
    _, components = msgspec.json.schema_components(
        [SettingsOut], ref_template="#/components/schemas/{name}"
    )
    return dict(components)


def settings_paths(api: str) -> dict[str, Any]:
    """The OpenAPI path of the route (mounted at ``api``)."""

    def refusal(name: str) -> dict[str, str]:
        return {"$ref": f"#/components/responses/{name}"}

    return {
        f"{api}/meters/{{ldn}}/settings": {
            "get": {
                "summary": "A meter's settings: each one's last known value (text and typed "
                "JSON), when it was read, and its newest command",
                "parameters": [
                    {
                        "name": "ldn",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                        "description": "the meter's LDN",
                    }
                ],
                "responses": {
                    "200": {
                        "description": "the settings, in the profile's order",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/SettingsOut"}
                            }
                        },
                    },
                    "401": refusal("Unauthorized"),
                    "403": refusal("Forbidden"),
                    "404": refusal("NotFound"),
                    "409": refusal("Conflict"),
                },
            }
        }
    }
