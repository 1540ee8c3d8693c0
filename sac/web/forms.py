"""Forms: what an operator typed, checked field by field, each error kept for its field.

A meter's fields are checked by their declarations (:data:`sac.web.schema.FIELDS`), as the
JSON API's are.  A form is parsed into the store's objects or into a dict {field: message}
that the page shows next to each field, with what was typed kept (keys excepted: they are
never shown back)."""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from sac import passwords
from sac.store import NewMeter, Role
from sac.web.schema import (
    FIELDS,
    KEY_RULE,
    POLL_MAX_S,
    FieldError,
    check_address,
    check_ip,
    check_ips,
    check_key,
    check_ldn,
    check_pdr,
    check_poll_interval,
    check_profile,
    check_system_title,
)

__all__ = [
    "FieldError",
    "MeterForm",
    "UserForm",
    "check_address",
    "check_ip",
    "check_ips",
    "check_key",
    "check_ldn",
    "check_pdr",
    "check_poll_interval",
    "check_profile",
    "check_system_title",
    "parse_meter_form",
    "parse_user_form",
]


@dataclass(slots=True)
class MeterForm:
    """An add-meter form as typed (``values``), its errors, and when valid, the meter and its
    Management keys (EK, AK or None for AK = EK)."""

    values: dict[str, str]
    errors: dict[str, str] = field(default_factory=dict)
    meter: NewMeter | None = None
    keys: tuple[bytes, bytes | None] | None = None


def parse_meter_form(form: Mapping[str, str], profiles: Collection[str]) -> MeterForm:
    values = {
        k: form.get(k, "").strip()
        for k in ("ldn", "pdr", "system_title", "profile", "address", "allowed_ips", "poll_minutes")
    }
    out = MeterForm(values)
    err = out.errors

    def checked(name: str, text: Any, message: str = "", rule: str = "") -> Any:
        """``text`` by the rule of its field's declaration (:data:`sac.web.schema.FIELDS`)."""
        try:
            return FIELDS[rule or name].check(text, profiles)  # type: ignore[misc]
        except FieldError as exc:
            err[name] = message or str(exc)
            return None

    ldn = values["ldn"]
    if not ldn:
        err["ldn"] = "Enter the meter's logical device name (16 characters)."
    else:
        checked("ldn", ldn)
    pdr = values["pdr"]
    if pdr:
        checked("pdr", pdr)
    title = None
    if values["system_title"]:
        title = checked("system_title", values["system_title"])
    else:
        err["system_title"] = "Enter the system title: the meter's pushes are found by it."
    checked("profile", values["profile"])
    ek_text, ak_text = form.get("ek", "").strip(), form.get("ak", "").strip()
    ek = None
    if not ek_text:
        err["ek"] = "Enter the encryption key (EK): 32 hexadecimal digits."
    else:
        ek = checked("ek", ek_text)
    ak = None
    if ak_text:
        ak = checked("ak", ak_text, f"{KEY_RULE[:-1]} (or empty: AK = EK).")
    address = values["address"] or None
    if address is not None:
        checked("address", address)
    items = values["allowed_ips"].replace(",", " ").split()
    ips = checked("allowed_ips", items)
    if ips is None:  # shown again without what is no address (a key typed there, say)
        good = []
        for item in items:
            with contextlib.suppress(FieldError):
                good.append(check_ip(item))
        values["allowed_ips"] = ", ".join(good)
    poll = None
    if values["poll_minutes"]:
        text = values["poll_minutes"]
        if not text.isdigit() or not 1 <= int(text) <= POLL_MAX_S // 60:
            err["poll_minutes"] = "Minutes between polls: a whole number from 1 to 527040."
        else:
            try:  # the rule of poll_interval_s, and only with an address
                poll = check_poll_interval(int(text) * 60, address is not None)
            except FieldError as exc:
                err["poll_minutes"] = str(exc)
    if err:
        return out
    try:
        out.meter = NewMeter(
            ldn=ldn,
            pdr=pdr or None,
            system_title=title,
            profile=values["profile"],
            address=address,
            allowed_ips=ips or (),
            poll_interval=poll,
        )
    except ValueError as exc:
        err["ldn"] = str(exc)
        return out
    assert ek is not None
    out.keys = (ek, ak)
    return out


MAX_PASSWORD = 1024  # characters: enough for any passphrase, not a hashing load


@dataclass(slots=True)
class UserForm:
    """A user form as typed (``values``: never the passwords) and its errors."""

    values: dict[str, str]
    errors: dict[str, str] = field(default_factory=dict)
    role: Role | None = None
    password: str | None = field(default=None, repr=False)


def parse_user_form(form: Mapping[str, str], *, fields: Collection[str]) -> UserForm:
    """The ``fields`` asked of ``name``, ``role`` and ``password`` (with ``password2``, the
    same typed again), checked."""
    values = {k: form.get(k, "").strip() for k in ("name", "role") if k in fields}
    out = UserForm(values)
    err = out.errors
    if "name" in fields:
        name = values["name"]
        if not name:
            err["name"] = "Enter a user name."
        elif len(name) > 64 or not name.isprintable():
            err["name"] = "A user name is 1 to 64 printable characters."
    if "role" in fields:
        try:
            out.role = Role(values["role"])
        except ValueError:
            err["role"] = "Choose viewer, operator or admin."
    if "password" in fields:
        password = form.get("password", "")
        if len(password) < passwords.MIN_LENGTH:
            err["password"] = f"A password has at least {passwords.MIN_LENGTH} characters."
        elif len(password) > MAX_PASSWORD:
            err["password"] = f"A password has at most {MAX_PASSWORD} characters."
        elif password != form.get("password2", ""):
            err["password2"] = "The two passwords differ."
        else:
            out.password = password
    return out
