"""Forms: what an operator typed, checked field by field, each error kept for its field.

A form is parsed into the store's objects or into a dict {field: message} that the page
shows next to each field, with what was typed kept (keys excepted: they are never shown
back)."""

from __future__ import annotations

import ipaddress
import string
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from sac import passwords
from sac.store import NewMeter, Role

__all__ = ["MeterForm", "UserForm", "parse_meter_form", "parse_user_form"]

_HEX = set(string.hexdigits)


@dataclass(slots=True)
class MeterForm:
    """An add-meter form as typed (``values``), its errors, and when valid, the meter and its
    Management keys (EK, AK or None for AK = EK)."""

    values: dict[str, str]
    errors: dict[str, str] = field(default_factory=dict)
    meter: NewMeter | None = None
    keys: tuple[bytes, bytes | None] | None = None


def _hex(text: str, size: int) -> bytes | None:
    cleaned = text.replace(" ", "").replace(":", "")
    if len(cleaned) != size * 2 or not set(cleaned) <= _HEX:
        return None
    return bytes.fromhex(cleaned)


def parse_meter_form(form: Mapping[str, str], profiles: Collection[str]) -> MeterForm:
    values = {
        k: form.get(k, "").strip()
        for k in ("ldn", "pdr", "system_title", "profile", "address", "allowed_ips", "poll_minutes")
    }
    out = MeterForm(values)
    err = out.errors
    ldn = values["ldn"]
    if not ldn:
        err["ldn"] = "Enter the meter's logical device name (16 characters)."
    elif len(ldn) != 16 or not ldn.isascii() or not ldn.isprintable() or " " in ldn:
        err["ldn"] = f"An LDN is 16 printable characters without spaces; this has {len(ldn)}."
    pdr = values["pdr"]
    if pdr and (not pdr.isdigit() or len(pdr) != 14):
        err["pdr"] = "A PDR is 14 digits."
    title = None
    if values["system_title"]:
        title = _hex(values["system_title"], 8)
        if title is None:
            err["system_title"] = "A system title is 8 bytes: 16 hexadecimal digits."
    else:
        err["system_title"] = "Enter the system title: the meter's pushes are found by it."
    if values["profile"] not in profiles:
        err["profile"] = "Choose one of the installed profiles."
    ek_text, ak_text = form.get("ek", "").strip(), form.get("ak", "").strip()
    ek = _hex(ek_text, 16) if ek_text else None
    if not ek_text:
        err["ek"] = "Enter the encryption key (EK): 32 hexadecimal digits."
    elif ek is None:
        err["ek"] = "A key is 16 bytes: 32 hexadecimal digits."
    ak = None
    if ak_text:
        ak = _hex(ak_text, 16)
        if ak is None:
            err["ak"] = "A key is 16 bytes: 32 hexadecimal digits (or empty: AK = EK)."
    address = values["address"] or None
    if address is not None:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            err["address"] = "An address to poll is host:port, e.g. 10.1.2.3:4059."
    ips: list[str] = []
    for item in values["allowed_ips"].replace(",", " ").split():
        try:
            ips.append(str(ipaddress.ip_address(item)))
        except ValueError:
            err["allowed_ips"] = f"{item!r} is not an IP address."
            break
    poll = None
    if values["poll_minutes"]:
        text = values["poll_minutes"]
        if not text.isdigit() or not 1 <= int(text) <= 527040:
            err["poll_minutes"] = "Minutes between polls: a whole number from 1 to 527040."
        elif address is None:
            err["poll_minutes"] = "Only a meter with an address to poll has a poll interval."
        else:
            poll = int(text) * 60
    if err:
        return out
    try:
        out.meter = NewMeter(
            ldn=ldn,
            pdr=pdr or None,
            system_title=title,
            profile=values["profile"],
            address=address,
            allowed_ips=tuple(ips),
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
