"""Forms: what an operator typed, checked field by field, each error kept for its field.

A form is parsed into the store's objects or into a dict {field: message} that the page
shows next to each field, with what was typed kept (keys excepted: they are never shown
back)."""

from __future__ import annotations

import contextlib
import ipaddress
import string
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from sac import passwords
from sac.errors import FieldError
from sac.store import NewMeter, Role
from sac.store.model import ldn_problem

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

T = TypeVar("T")

_HEX = set(string.hexdigits)

# the rules of a meter's fields, shared by the add-meter form and the JSON API
POLL_MIN_S, POLL_MAX_S = 60, 527040 * 60  # a minute to 366 days
KEY_RULE = "A key is 16 bytes: 32 hexadecimal digits."


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


def check_ldn(text: str) -> str:
    """A logical device name: :data:`sac.store.model.LDN_RULE`."""
    problem = ldn_problem(text)
    if problem is not None:
        raise FieldError(f"{problem[0].upper()}{problem[1:]}.")
    return text


def check_pdr(text: str) -> str:
    """A point of delivery (PDR): 14 digits."""
    if not text.isascii() or not text.isdigit() or len(text) != 14:
        raise FieldError("A PDR is 14 digits.")
    return text


def check_system_title(text: str) -> bytes:
    """A system title: 8 bytes in hexadecimal (spaces and colons between them allowed)."""
    title = _hex(text, 8)
    if title is None:
        raise FieldError("A system title is 8 bytes: 16 hexadecimal digits.")
    return title


def check_profile(text: str, profiles: Collection[str]) -> str:
    if text not in profiles:
        raise FieldError("Choose one of the installed profiles.")
    return text


def check_key(text: str) -> bytes:
    """An EK or AK: 16 bytes in hexadecimal; the error never repeats it."""
    key = _hex(text, 16)
    if key is None:
        raise FieldError(KEY_RULE)
    return key


def check_address(text: str) -> str:
    """An address to poll: host:port."""
    host, _, port = text.rpartition(":")
    if not host or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise FieldError("An address to poll is host:port, e.g. 10.1.2.3:4059.")
    return text


def check_ip(text: str) -> str:
    """An IP address (v4 or v6) a meter may connect from, in its canonical form; the error
    does not repeat what was typed (it may be a key in the wrong field)."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise FieldError("This is not an IP address (IPv4 or IPv6).") from None


def check_ips(items: Sequence[str]) -> tuple[str, ...]:
    """Each of ``items`` by :func:`check_ip`; the error names the first bad one by its
    position, never by its value."""
    out = []
    for position, item in enumerate(items, 1):
        try:
            out.append(check_ip(item))
        except FieldError:
            raise FieldError(
                f"Entry {position} of {len(items)} is not an IP address (IPv4 or IPv6)."
            ) from None
    return tuple(out)


def check_poll_interval(seconds: int, has_address: bool) -> int:
    """Seconds between polls: a minute to 366 days, and only for a meter with an address."""
    if not POLL_MIN_S <= seconds <= POLL_MAX_S:
        raise FieldError(f"A poll interval is {POLL_MIN_S} to {POLL_MAX_S} seconds.")
    if not has_address:
        raise FieldError("Only a meter with an address to poll has a poll interval.")
    return seconds


def parse_meter_form(form: Mapping[str, str], profiles: Collection[str]) -> MeterForm:
    values = {
        k: form.get(k, "").strip()
        for k in ("ldn", "pdr", "system_title", "profile", "address", "allowed_ips", "poll_minutes")
    }
    out = MeterForm(values)
    err = out.errors

    def checked(name: str, check: Callable[[str], T], text: str, message: str = "") -> T | None:
        try:
            return check(text)
        except FieldError as exc:
            err[name] = message or str(exc)
            return None

    ldn = values["ldn"]
    if not ldn:
        err["ldn"] = "Enter the meter's logical device name (16 characters)."
    else:
        checked("ldn", check_ldn, ldn)
    pdr = values["pdr"]
    if pdr:
        checked("pdr", check_pdr, pdr)
    title = None
    if values["system_title"]:
        title = checked("system_title", check_system_title, values["system_title"])
    else:
        err["system_title"] = "Enter the system title: the meter's pushes are found by it."
    checked("profile", lambda text: check_profile(text, profiles), values["profile"])
    ek_text, ak_text = form.get("ek", "").strip(), form.get("ak", "").strip()
    ek = None
    if not ek_text:
        err["ek"] = "Enter the encryption key (EK): 32 hexadecimal digits."
    else:
        ek = checked("ek", check_key, ek_text)
    ak = None
    if ak_text:
        ak = checked("ak", check_key, ak_text, f"{KEY_RULE[:-1]} (or empty: AK = EK).")
    address = values["address"] or None
    if address is not None:
        checked("address", check_address, address)
    items = values["allowed_ips"].replace(",", " ").split()
    ips = checked("allowed_ips", check_ips, items)  # type: ignore[arg-type]
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
            poll = checked(
                "poll_minutes",
                lambda t: check_poll_interval(int(t) * 60, address is not None),
                text,
            )
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
