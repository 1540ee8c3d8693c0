"""Forms: what an operator typed, checked field by field, each error kept for its field.

A meter's fields are checked by their declarations (:data:`sac.web.schema.FIELDS`), as the
JSON API's are.  A form is parsed into the store's objects or into a dict {field: message}
that the page shows next to each field, with what was typed kept (keys excepted: they are
never shown back)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Mapping
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


_Checked = Callable[..., Any]


def parse_meter_form(form: Mapping[str, str], profiles: Collection[str]) -> MeterForm:
    values = {
        k: form.get(k, "").strip()
        for k in ("ldn", "pdr", "system_title", "profile", "address", "allowed_ips", "poll_minutes")
    }
    out = MeterForm(values)
    err = out.errors
    checked = _checker(err, profiles)
    title = _check_identity(values, err, checked)
    checked("profile", values["profile"])
    ek, ak = _check_keys(form, err, checked)
    address = values["address"] or None
    if address is not None:
        checked("address", address)
    ips = _check_allowed_ips(values, checked)
    poll = _check_poll_minutes(values["poll_minutes"], address is not None, err)
    if err:
        return out
    try:
        out.meter = NewMeter(
            ldn=values["ldn"],
            pdr=values["pdr"] or None,
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


def _checker(err: dict[str, str], profiles: Collection[str]) -> _Checked:
    def checked(name: str, text: Any, message: str = "", rule: str = "") -> Any:
        """``text`` by the rule of its field's declaration (:data:`sac.web.schema.FIELDS`);
        None, and the error kept for ``name``, when it breaks it."""
        try:
            return FIELDS[rule or name].check(text, profiles)  # type: ignore[misc]
        except FieldError as exc:
            err[name] = message or str(exc)
            return None

    return checked


def _check_identity(values: dict[str, str], err: dict[str, str], checked: _Checked) -> Any:
    """The LDN (required), the PDR (optional) and the system title (required): the title."""
    if not values["ldn"]:
        err["ldn"] = "Enter the meter's logical device name (16 characters)."
    else:
        checked("ldn", values["ldn"])
    if values["pdr"]:
        checked("pdr", values["pdr"])
    if not values["system_title"]:
        err["system_title"] = "Enter the system title: the meter's pushes are found by it."
        return None
    return checked("system_title", values["system_title"])


def _check_keys(
    form: Mapping[str, str], err: dict[str, str], checked: _Checked
) -> tuple[bytes | None, bytes | None]:
    """The EK (required) and the AK (optional: AK = EK), never kept in the values."""
    ek_text, ak_text = form.get("ek", "").strip(), form.get("ak", "").strip()
    ek = None
    if not ek_text:
        err["ek"] = "Enter the encryption key (EK): 32 hexadecimal digits."
    else:
        ek = checked("ek", ek_text)
    ak = None
    if ak_text:
        ak = checked("ak", ak_text, f"{KEY_RULE[:-1]} (or empty: AK = EK).")
    return ek, ak


def _check_allowed_ips(values: dict[str, str], checked: _Checked) -> Any:
    items = values["allowed_ips"].replace(",", " ").split()
    ips = checked("allowed_ips", items)
    if ips is None:  # shown again without what is no address (a key typed there, say)
        good = []
        for item in items:
            with contextlib.suppress(FieldError):
                good.append(check_ip(item))
        values["allowed_ips"] = ", ".join(good)
    return ips


def _check_poll_minutes(text: str, has_address: bool, err: dict[str, str]) -> int | None:
    """The poll interval typed in minutes, in seconds (None: not polled)."""
    if not text:
        return None
    if not text.isdigit() or not 1 <= int(text) <= POLL_MAX_S // 60:
        err["poll_minutes"] = "Minutes between polls: a whole number from 1 to 527040."
        return None
    try:  # the rule of poll_interval_s, and only with an address
        return check_poll_interval(int(text) * 60, has_address)
    except FieldError as exc:
        err["poll_minutes"] = str(exc)
        return None


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
