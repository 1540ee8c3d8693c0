"""A meter's configuration page (``/meters/<ldn>/settings``, routed by
:class:`sac.web.pages.Pages`): each setting of its profile (:mod:`sac.profiles.settings`)
with its last known value, when it was read, and the newest command for it, followed live
while it is pending or sent; for operators, a "read now" per item and for all, and a typed
form per item.

A change goes in two steps: the typed text is checked (:meth:`Setting.value_of`) -- a
refusal comes back next to its field with the text kept, nothing queued -- then a
confirmation shows the value before (last known) and after (normalised) and queues the
command (set-setting, or sync-clock for the clock) once confirmed; queueing is audited
(:func:`sac.services.commands.queue`).  A secret (the valve's PIN) is typed twice, which is
its confirmation: its value is never shown nor sent back, only whether a command set it.
:func:`gather` is also what the JSON API answers (:mod:`sac.web.api_settings`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from werkzeug.exceptions import NotFound

from sac.dlms.axdr import decode_data
from sac.dlms.typedjson import to_json
from sac.errors import CodecError
from sac.profiles.settings import Setting, SettingError, setting_of, setting_ref
from sac.services import commands as command_service
from sac.services.commands import CommandError
from sac.store import Command, CommandState, Meter, Reading, WebSession
from sac.web import display
from sac.web.common import BadRequest, Page, arg
from sac.web.history import reading_text

__all__ = ["Item", "confirm_change", "gather", "queue_reads", "show", "write"]

OPEN_STATES = ("pending", "sent")


@dataclass(frozen=True, slots=True)
class Item:
    """One setting of a meter as the page and the API show it."""

    setting: Setting
    text: str | None  # the last known value (None: never read, or a secret)
    typed: dict[str, Any] | None  # the same as typed JSON (None: not of the setting's shape)
    read_at: dt.datetime | None  # when it was read (a secret: when a command set it)
    is_set: bool | None  # a secret: whether a command set it (None: not a secret)
    command: Command | None  # the newest command for it

    @property
    def key(self) -> str:
        return self.setting.key

    @property
    def readable(self) -> bool:
        return not self.setting.secret


def last_value(
    setting: Setting, reading: Reading, profile: Any
) -> tuple[str, dict[str, Any] | None]:
    """A stored reading of ``setting`` as its text and typed JSON: A-XDR bytes decoded, a
    number through the setting's shape (which gives its A-XDR type back); a value not of
    its shape as the history shows it, saying so."""
    try:
        if reading.raw is not None:
            value = decode_data(reading.raw)
            return setting.show(value, profile), to_json(value)
        if reading.value is not None:
            value, text = setting.value_of(str(int(reading.value)), profile)
            return text, to_json(value)
    except (SettingError, CodecError, ValueError, TypeError) as exc:
        return f"{reading_text(reading, setting.key)} (not of this setting's shape: {exc})", None
    return "—", None


def _command_kinds(profile: Any) -> dict[str, str]:
    """{kind: setting} of the commands without a ``setting`` parameter that write one."""
    kinds = {s.command: s.key for s in profile.settings if s.command != "set-setting"}
    if setting_of(profile, "pdr") is not None:
        kinds["set-pdr"] = "pdr"
    return kinds


async def gather(store: Any, profile: Any, ldn: str) -> list[Item]:
    """Each setting of a meter of ``profile``: its newest reading and its newest command
    (three queries whatever the number of settings)."""
    settings = profile.settings
    refs = {s.key: setting_ref(profile, s) for s in settings}
    readings = await store.readings.newest(ldn, {(r.obis, r.attribute) for r in refs.values()})
    keys = [s.key for s in settings]
    commands = await store.commands.latest_by_setting(ldn, keys, _command_kinds(profile))
    secrets = [s.key for s in settings if s.secret]
    done = {}
    if secrets:
        done = await store.commands.latest_by_setting(ldn, secrets, states=[CommandState.DONE])
    items = []
    for s in settings:
        text = typed = read_at = is_set = None
        if s.secret:
            is_set = s.key in done
            read_at = done[s.key].finished if is_set else None
        elif (reading := readings.get((refs[s.key].obis, refs[s.key].attribute))) is not None:
            text, typed = last_value(s, reading, profile)
            read_at = reading.captured or reading.received
        items.append(Item(s, text, typed, read_at, is_set, commands.get(s.key)))
    return items


# --- the page and its forms -----------------------------------------------------------------


async def _meter(pages: Any, ldn: str) -> tuple[Meter, Any]:
    meter = await pages.store.meters.get(ldn)
    if meter is None:
        raise NotFound()
    profile = display.profile_of(pages.registry, meter.profile)
    if profile is None:
        raise BadRequest(f"the meter's profile {meter.profile} is not installed")
    return meter, profile


async def show(
    pages: Any,
    request: Any,
    ldn: str,
    errors: Mapping[str, str] | None = None,
    typed: Mapping[str, str] | None = None,
) -> Page:
    """The page; with ``errors`` (by setting) and the ``typed`` text kept: refused, 400."""
    meter, profile = await _meter(pages, ldn)
    items = await gather(pages.store, profile, ldn)
    return Page(
        "settings.html",
        dict(
            title=f"Settings of {ldn}",
            m=meter,
            items=items,
            errors=errors or {},
            typed=typed or {},
            queued=arg(request, "queued"),
            reads=arg(request, "reads"),
            open_states=OPEN_STATES,
        ),
        400 if errors else 200,
    )


def _writable(profile: Any, key: str) -> Setting:
    setting = setting_of(profile, key)
    if setting is None:
        raise BadRequest(f"{key!r} is not a setting of this meter")
    return setting


async def queue_reads(pages: Any, request: Any, session: WebSession, ldn: str) -> Page:
    """Read now: a read-setting for the setting named, or for each one not secret (all)."""
    _, profile = await _meter(pages, ldn)
    key = arg(request, "setting")
    if key == "all":
        keys = [s.key for s in profile.settings if not s.secret]
    elif (setting := _writable(profile, key)).secret:
        raise BadRequest(f"{key} is secret: it is never read back")
    else:
        keys = [setting.key]
    by, now = pages.web.actor(request, session), pages.web.now()
    ids = []
    for k in keys:
        command = await command_service.queue(
            pages.store, profile, ldn, "read-setting", {"setting": k}, by, now=now
        )
        ids.append(command.id)
    where = f"/meters/{quote(ldn)}/settings"
    if key == "all":
        return Page(redirect=f"{where}?reads={len(ids)}#settings")
    return Page(redirect=f"{where}?queued={ids[0]}#s-{key}")


async def confirm_change(pages: Any, request: Any, session: WebSession, ldn: str) -> Page:
    """A change typed: refused next to its field, or its confirmation (before and after);
    a secret typed twice alike is queued at once."""
    meter, profile = await _meter(pages, ldn)
    setting = _writable(profile, arg(request, "setting"))
    key, text = setting.key, arg(request, "value")
    if setting.command == "sync-clock":
        now = display.local_time(pages.web.now())
        after = f"the SAC's time when the meter next connects (now {now})"
        return await _confirmation(pages, meter, profile, setting, after, "")
    if setting.secret and text != arg(request, "again"):
        return await show(pages, request, ldn, {key: "the two entries differ"})
    try:
        _value, normal = setting.value_of(text, profile)
    except SettingError as exc:
        typed = {} if setting.secret else {key: text}  # a secret is never sent back
        return await show(pages, request, ldn, {key: str(exc)}, typed)
    if setting.secret:
        return await write(pages, request, session, ldn)
    return await _confirmation(pages, meter, profile, setting, normal, normal)


async def _confirmation(
    pages: Any, meter: Meter, profile: Any, setting: Setting, after: str, value: str
) -> Page:
    """Before (the last known value) and after, and the button that queues the change."""
    [item] = [i for i in await gather(pages.store, profile, meter.ldn) if i.key == setting.key]
    title = (
        "Synchronise the clock" if setting.command == "sync-clock" else f"Change {setting.label}"
    )
    return Page(
        "setting_confirm.html",
        dict(title=title, m=meter, item=item, after=after, value=value),
    )


async def write(pages: Any, request: Any, session: WebSession, ldn: str) -> Page:
    """The change confirmed: its command queued (the meter named in ``confirm``), then back
    to the page, where its life shows; a value refused now (the profile changed meanwhile)
    comes back next to its field."""
    _, profile = await _meter(pages, ldn)
    setting = _writable(profile, arg(request, "setting"))
    if setting.secret and arg(request, "again") != arg(request, "value"):
        return await show(pages, request, ldn, {setting.key: "the two entries differ"})
    if not setting.secret and arg(request, "confirm") != ldn:
        raise BadRequest("the confirmation does not name this meter")
    params: dict[str, Any] = {}
    if setting.command == "set-setting":
        params = {"setting": setting.key, "value": arg(request, "value")}
    by, now = pages.web.actor(request, session), pages.web.now()
    try:
        command = await command_service.queue(
            pages.store, profile, ldn, setting.command, params, by, now=now
        )
    except CommandError as exc:
        typed = {} if setting.secret else {setting.key: arg(request, "value")}
        message = str(exc).removeprefix(f"{exc.field}: ")
        return await show(pages, request, ldn, {setting.key: message}, typed)
    return Page(redirect=f"/meters/{quote(ldn)}/settings?queued={command.id}#s-{setting.key}")
