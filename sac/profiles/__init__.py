"""Meter profiles: what differs from one meter model to another, as data, found as plugins.

A profile names its OBIS map, its compact-frame layouts, its client SAPs, how its valve is
driven, its ciphering and clock quirks and its session budget.  The core reads them; a vendor
adds a model by dropping a module into the ``sac.plugins`` package (from this distribution or
from their own wheel) that holds a :class:`MeterProfile` (see ``docs/profiles.md``).

:func:`discover_profiles` finds them with ``twisted.plugin.getPlugins``, checks each with
``verifyObject`` and :meth:`IMeterProfile.validate`, and reports a broken one by name with the
reason without stopping the others.  :class:`ProfileRegistry` picks a meter's profile: an
explicit assignment, else the manufacturer (FLAG id of the UNI/TS system title), else an LDN
prefix, else the generic UNI/TS 11291-12-2 profile.

The UNI/TS compact-frame layouts the shipped profiles share (CF47, CF48, CF49, CF51, CF30) are
in :mod:`sac.profiles.layouts`.
"""

from __future__ import annotations

import datetime as dt
import re
import traceback
from collections import ChainMap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType, ModuleType
from typing import Any

from twisted.plugin import IPlugin, getPlugins
from twisted.python.modules import getModule
from zope.interface import Attribute, Interface, implementer
from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

from sac.dlms import Obis
from sac.dlms.axdr import Array, Integer, LongUnsigned, OctetString, Structure
from sac.dlms.compact import CompactLayout
from sac.dlms.cosemtime import CosemDate, CosemTime
from sac.errors import PluginError
from sac.eventcodes import EventKind
from sac.profiles.readplan import UNI_TS_PLAN, PlanItem, ReadKind
from sac.profiles.settings import UNI_TS_SETTINGS, Setting, setting_problems

__all__ = [
    "GENERIC_PROFILE",
    "REQUIRED_QUANTITIES",
    "STANDARD_OBJECTS",
    "CosemRef",
    "Discovery",
    "IMeterProfile",
    "MeterProfile",
    "PluginProblem",
    "ProfileRegistry",
    "ValveAction",
    "ValveMethod",
    "ValveStep",
    "compact_data",
    "compact_template",
    "discover_profiles",
    "flag_id",
    "valve_steps",
]

GENERIC_PROFILE = "uni-ts-11291-12-2"


@dataclass(frozen=True, slots=True)
class CosemRef:
    """One attribute of one COSEM object: class id, logical name, attribute."""

    class_id: int
    obis: Obis
    attribute: int = 2

    def at(self, attribute: int) -> CosemRef:
        return CosemRef(self.class_id, self.obis, attribute)


def ref(class_id: int, obis: str, attribute: int = 2) -> CosemRef:
    return CosemRef(class_id, Obis(obis), attribute)


def compact_data(template_id: int) -> CosemRef:
    """The compact data object (IC 62) whose buffer carries frames of ``template_id``."""
    return CosemRef(62, Obis.from_groups(0, 0, 66, 0, template_id), 2)


def compact_template(obis: Obis) -> int | None:
    """The template id of a compact data object's logical name; None for any other object."""
    a, b, c, d, e, f = obis.groups
    return e if (a, b, c, d, f) == COMPACT_DATA else None


# The standard quantities and where UNI/TS 11291-12-2 meters keep them (docs/uni-ts-11291.md §1).
STANDARD_OBJECTS: Mapping[str, CosemRef] = MappingProxyType(
    {
        "ldn": ref(1, "0.0.42.0.0.255"),
        "pdr": ref(1, "0.0.96.1.10.255"),
        "serial_number": ref(1, "0.0.96.1.0.255"),
        "converted_volume_index": ref(3, "7.0.13.2.0.255"),
        "converted_volume_index_under_alarm": ref(3, "7.0.12.2.0.255"),
        "current_diagnostic": ref(3, "7.0.96.5.1.255"),
        "daily_diagnostic": ref(1, "7.1.96.5.1.255"),
        "battery_autonomy": ref(3, "0.0.96.6.6.255"),
        "valve": ref(70, "0.0.96.3.10.255"),
        "valve_script_table": ref(9, "0.0.10.0.106.255"),
        "valve_schedule": ref(22, "0.0.15.0.1.255"),
        "clock": ref(8, "0.0.1.0.0.255"),
        "unix_time": ref(1, "0.0.1.1.0.255"),
        "frame_counter_management": ref(1, "0.0.43.1.1.255"),
        "frame_counter_management_offline": ref(1, "0.1.43.1.1.255"),
        "frame_counter_installer": ref(1, "0.0.43.1.3.255"),
        "frame_counter_guarantor": ref(1, "0.0.43.1.48.255"),
        "metrological_event_counter": ref(1, "0.0.96.15.1.255"),
        "event_counter": ref(1, "0.0.96.15.2.255"),
        "daily_profile": ref(7, "7.0.99.99.3.255"),
        "event_logbook": ref(7, "7.0.99.98.0.255"),
        "metrological_logbook": ref(7, "7.0.99.98.1.255"),
        "parameter_logbook": ref(7, "7.0.99.16.0.255"),
        # besides: what the compact frames, the logbooks' columns and the simulator name
        "event_code": ref(1, "0.0.96.11.2.255"),
        "metrological_event_code": ref(1, "0.0.96.11.1.255"),
        "network_status": ref(1, "0.1.96.5.4.255"),
        "billing_period_counter": ref(1, "7.0.0.1.0.255"),
        "spare": ref(1, "0.0.94.39.40.255"),
        "billing_snapshots": ref(7, "7.0.98.11.0.255"),
        "battery_autonomy_secondary": ref(3, "0.1.96.6.6.255"),
        "temperature": ref(3, "7.0.41.0.0.255"),
        "interval_profile": ref(7, "7.0.99.99.1.255"),
        "session_timeouts": ref(1, "0.1.94.39.52.255"),
        # the settings of sac.profiles.settings (docs/uni-ts-11291.md §1.4, §1.6, §1.7)
        "push_setup": ref(40, "0.1.25.9.0.255"),
        "push_schedule": ref(22, "0.1.15.0.4.255"),
        "billing_period_start": ref(1, "0.0.94.39.11.255"),
        "valve_configuration": ref(1, "0.0.94.39.3.255"),
        "valve_pin": ref(1, "0.0.94.39.1.255"),
        "opening_validity": ref(1, "0.0.94.39.6.255"),
        "no_communication_threshold": ref(21, "0.0.94.39.5.255"),
        "tamper_threshold": ref(21, "0.0.94.39.25.255"),
    }
)
# the compact data objects (IC 62) are 0.0.66.0.<template id>.255 (docs/uni-ts-11291.md §1.8)
COMPACT_DATA = (0, 0, 66, 0, 255)
REQUIRED_QUANTITIES = frozenset(
    (
        "ldn",
        "pdr",
        "converted_volume_index",
        "current_diagnostic",
        "battery_autonomy",
        "valve",
        "clock",
        "frame_counter_management",
        "daily_profile",
        "event_logbook",
        "metrological_logbook",
    )
)


class ValveMethod(StrEnum):
    DISCONNECT_CONTROL = "ic70"  # IC 70 methods 1 remote_disconnect, 2 remote_reconnect
    SCHEDULED_SCRIPT = "script"  # SET the single action schedule to a valve script (HW-A2)


class ValveAction(StrEnum):
    CLOSE = "close"
    ENABLE_OPENING = "enable-opening"  # ready_for_reconnection: the customer opens on site


# Script ids of the disconnect control script table 0.0.10.0.106.255 (docs/uni-ts-11291.md §1.6)
VALVE_SCRIPTS = {ValveAction.CLOSE: 1, ValveAction.ENABLE_OPENING: 2}
# IC 70 method ids
VALVE_METHODS = {ValveAction.CLOSE: 1, ValveAction.ENABLE_OPENING: 2}

_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,62}$")
_FLAG = re.compile(r"^[A-Z]{3}$")
UNIT_DAY = 4
UNIT_PERCENT = 56


class IMeterProfile(Interface):
    """A meter model: everything the core needs to talk to it and read what it says."""

    name = Attribute("unique name, stored with each meter (lower case, digits, '-', '.')")
    description = Attribute("one line for people")
    manufacturers = Attribute("FLAG ids (3 letters) of the UNI/TS system titles it claims")
    ldn_prefixes = Attribute("LDN prefixes it claims when the system title is unknown")
    clients = Attribute("{role: client SAP}: at least 'management' and 'public'")
    objects = Attribute("{quantity: CosemRef}: the standard quantities (REQUIRED_QUANTITIES)")
    layouts = Attribute("{template id: CompactLayout}: the compact frames it sends")
    push_templates = Attribute("template ids its pushes carry, the usual one first")
    valve_method = Attribute("ValveMethod: IC 70 methods or the scheduled scripts")
    omit_system_title = Attribute("general-glo-ciphering to it carries an empty system title")
    ak_equals_ek = Attribute("its AK is its EK (Italian practice): one key to import")
    inverted_deviation = Attribute("its clock deviation has the Italian (inverted) sign")
    battery_unit = Attribute("DLMS unit of its battery autonomy: 4 days, 56 percent")
    volume_scaler_unit = Attribute(
        "(scaler, DLMS unit) of the volumes its compact frames carry without one"
    )
    max_pdu = Attribute("the max PDU of its pre-established Management association")
    session_budget = Attribute("seconds a session with it may last (its max duration)")
    diagnostic_bits = Attribute(
        "{bit: name} of its diagnostic bitmasks, where known (pages show the others raw)"
    )
    events = Attribute(
        "{code: sac.eventcodes.EventKind}: its own event codes (the manufacturer's, from 193)"
    )
    read_plan = Attribute(
        "tuple of PlanItem (sac.profiles.readplan): what a session reads beyond the frame"
    )

    settings = Attribute(
        "tuple of Setting (sac.profiles.settings): what an operator may edit on its meters"
    )

    def validate() -> None:
        """Raise PluginError naming what is inconsistent."""


@implementer(IPlugin, IMeterProfile)
@dataclass(frozen=True, eq=False)
class MeterProfile:
    """A profile as data; the defaults are the generic UNI/TS 11291-12-2 meter."""

    name: str
    description: str
    manufacturers: tuple[str, ...] = ()
    ldn_prefixes: tuple[str, ...] = ()
    clients: Mapping[str, int] = field(
        default_factory=lambda: MappingProxyType(
            {"management": 1, "installer": 3, "public": 16, "guarantor": 48}
        )
    )
    objects: Mapping[str, CosemRef] = field(default_factory=lambda: STANDARD_OBJECTS)
    layouts: Mapping[int, CompactLayout] = field(default_factory=dict)
    push_templates: tuple[int, ...] = ()
    valve_method: ValveMethod = ValveMethod.DISCONNECT_CONTROL
    omit_system_title: bool = False
    ak_equals_ek: bool = True
    inverted_deviation: bool = True
    battery_unit: int = UNIT_DAY
    # the converted-volume index in litres: scaler -3, unit 14 (corrected m3)
    # (docs/uni-ts-11291.md §1.1)
    volume_scaler_unit: tuple[int, int] = (-3, 14)
    max_pdu: int = 504
    session_budget: float = 80.0
    # no public definition of the diagnostic bits (docs/uni-ts-11291.md §1.9): none by default
    diagnostic_bits: Mapping[int, str] = field(default_factory=dict)
    # its own event codes, named over the UNI/TS ones (sac.eventcodes.describe)
    events: Mapping[int, EventKind] = field(default_factory=dict)
    read_plan: tuple[PlanItem, ...] = UNI_TS_PLAN
    settings: tuple[Setting, ...] = UNI_TS_SETTINGS

    def validate(self) -> None:
        problems = [
            *self._identity_problems(),
            *self._object_problems(),
            *self._valve_problems(),
            *self._limit_problems(),
            *_plan_problems(self.read_plan, self.objects),
            *setting_problems(self.settings, self.objects),
            *(
                f"event {code} is not an EventKind of that code"
                for code, kind in self.events.items()
                if not isinstance(kind, EventKind) or kind.code != code
            ),
        ]
        if problems:
            raise PluginError(f"profile {self.name!r}: {'; '.join(problems)}")

    def _identity_problems(self) -> list[str]:
        """Its name, the manufacturers it claims, the clients it has."""
        problems = []
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            problems.append(f"name {self.name!r} is not lower-case letters, digits, '-', '.'")
        problems += [
            f"manufacturer {m!r} is not a FLAG id"
            for m in self.manufacturers
            if not _FLAG.match(str(m))
        ]
        for role in ("management", "public"):
            sap = self.clients.get(role)
            if not isinstance(sap, int) or not 0 < sap < 0x10000:
                problems.append(f"client {role!r} needs a SAP (1..65535), not {sap!r}")
        return problems

    def _object_problems(self) -> list[str]:
        """Its objects, its compact frames' layouts and the templates its pushes carry."""
        problems = []
        missing = REQUIRED_QUANTITIES - set(self.objects)
        if missing:
            problems.append(f"objects lack {', '.join(sorted(missing))}")
        problems += [
            f"object {q!r} is not a CosemRef"
            for q, r in self.objects.items()
            if not isinstance(r, CosemRef)
        ]
        for template_id, layout in self.layouts.items():
            if not isinstance(layout, CompactLayout) or layout.template_id != template_id:
                problems.append(f"layout {template_id} is not a CompactLayout with that id")
        problems += [
            f"push template {t} has no layout" for t in self.push_templates if t not in self.layouts
        ]
        return problems

    def _valve_problems(self) -> list[str]:
        if self.valve_method not in tuple(ValveMethod):
            return [f"valve method {self.valve_method!r} is unknown"]
        if self.valve_method is ValveMethod.SCHEDULED_SCRIPT and not {
            "valve_script_table",
            "valve_schedule",
        } <= set(self.objects):
            return ["the scheduled-script valve needs valve_script_table and valve_schedule"]
        return []

    def _limit_problems(self) -> list[str]:
        """Its numbers: max PDU, session budget, volume scaler and unit, battery unit."""
        problems = []
        if not 64 <= self.max_pdu <= 0xFFFF:
            problems.append(f"max PDU {self.max_pdu} is not 64..65535")
        if not 0 < self.session_budget <= 3600:
            problems.append(f"session budget {self.session_budget} s is not in (0, 3600]")
        scaler_unit = self.volume_scaler_unit
        if (
            not isinstance(scaler_unit, tuple)
            or len(scaler_unit) != 2
            or not -128 <= scaler_unit[0] <= 127
            or not 0 <= scaler_unit[1] <= 255
        ):
            problems.append(f"volume scaler/unit {scaler_unit!r} is not (int8, enum)")
        if self.battery_unit not in (4, 5, 6, UNIT_PERCENT):
            problems.append(f"battery unit {self.battery_unit} is not days, hours, minutes or %")
        return problems


def _plan_problems(plan: tuple[PlanItem, ...], objects: Mapping[str, CosemRef]) -> list[str]:
    problems = []
    for item in plan:
        if not isinstance(item, PlanItem):
            problems.append(f"read plan item {item!r} is not a PlanItem")
            continue
        target = objects.get(item.quantity)
        if target is None:
            problems.append(f"read plan: {item.quantity!r} is not in its objects")
        elif item.kind is ReadKind.SINCE_LAST and target.class_id != 7:
            problems.append(f"read plan: {item.quantity!r} is read by range but is not IC 7")
        if item.when_moved is not None and item.when_moved not in objects:
            problems.append(f"read plan: counter {item.when_moved!r} is not in its objects")
        if item.every < dt.timedelta(0):
            problems.append(f"read plan: {item.quantity!r} every {item.every} is negative")
    return problems


# --- the UNI/TS system title ------------------------------------------------------------------


def flag_id(system_title: bytes | None) -> str | None:
    """The manufacturer's FLAG id of a UNI/TS system title (bytes 0-1, M-Bus code,
    little-endian: ``2F19...`` is "FIO"); None when it is not three letters."""
    if system_title is None or len(system_title) != 8:
        return None
    code = int.from_bytes(system_title[:2], "little")
    letters = "".join(chr(((code >> shift) & 0x1F) + 64) for shift in (10, 5, 0))
    return letters if _FLAG.match(letters) and not code >> 15 else None


def uni_ts_system_title(manufacturer: str, serial: int) -> bytes:
    """The system title of a meter: FLAG id and a 12-digit serial, as UNI/TS writes them."""
    if not _FLAG.match(manufacturer) or not 0 <= serial < 10**12:
        raise ValueError("a FLAG id is 3 capitals and a serial has at most 12 digits")
    code = sum((ord(c) - 64) << shift for c, shift in zip(manufacturer, (10, 5, 0), strict=True))
    return code.to_bytes(2, "little") + bytes.fromhex(f"{serial:012d}")[::-1]


# --- valve commands ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ValveStep:
    """One request of a valve command: an ACTION (``method``) or a SET of ``target``."""

    target: CosemRef
    value: Any
    method: int | None = None


def valve_steps(
    profile: IMeterProfile, action: ValveAction, at: dt.datetime | None = None
) -> list[ValveStep]:
    """The requests that carry ``action`` to a meter of ``profile``.  The scheduled-script
    method runs at ``at`` (the meter's local time, as it keeps its clock; None: at once)."""
    if profile.valve_method is ValveMethod.DISCONNECT_CONTROL:
        valve = profile.objects["valve"]
        return [ValveStep(valve, Integer(0), VALVE_METHODS[action])]
    table, schedule = profile.objects["valve_script_table"], profile.objects["valve_schedule"]
    script = Structure((OctetString(bytes(table.obis)), LongUnsigned(VALVE_SCRIPTS[action])))
    if at is None:
        when = Structure((OctetString(b"\xff" * 4), OctetString(b"\xff\xff\xff\xff\xff")))
    else:
        when = Structure(
            (
                OctetString(CosemTime(at.hour, at.minute, at.second, 0).to_bytes()),
                OctetString(CosemDate(at.year, at.month, at.day).to_bytes()),  # weekday unset
            )
        )
    return [ValveStep(schedule.at(2), script), ValveStep(schedule.at(4), Array((when,)))]


# --- discovery and matching -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PluginProblem:
    """A plugin module or object that was skipped, and why."""

    name: str
    reason: str

    def __str__(self) -> str:
        return f"profile plugin {self.name} skipped: {self.reason}"


class ProfileRegistry:
    """The profiles found, by name; picks the one of a meter."""

    def __init__(self, profiles: Iterable[IMeterProfile], default: str = GENERIC_PROFILE) -> None:
        self.profiles: dict[str, IMeterProfile] = {p.name: p for p in profiles}
        self.default = default
        self._by_flag = {m: p for p in self.profiles.values() for m in p.manufacturers}
        self._prefixes = sorted(
            ((prefix, p) for p in self.profiles.values() for prefix in p.ldn_prefixes),
            key=lambda item: -len(item[0]),
        )

    def __getitem__(self, name: str) -> IMeterProfile:
        try:
            return self.profiles[name]
        except KeyError:
            raise PluginError(
                f"no meter profile {name!r} (known: {', '.join(sorted(self.profiles))})"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self.profiles

    def objects_of(self, name: str | None) -> Mapping[str, CosemRef]:
        """The object map of the profile ``name``, the generic catalogue's objects for what it
        does not name (or for a profile not installed)."""
        profile = self.profiles.get(name or "")
        if profile is None:
            return STANDARD_OBJECTS
        return ChainMap(dict(profile.objects), dict(STANDARD_OBJECTS))

    def match(
        self,
        *,
        assigned: str | None = None,
        system_title: bytes | None = None,
        ldn: str | None = None,
    ) -> IMeterProfile:
        """The profile of a meter: assigned by name, else by the FLAG id of its system title,
        else by its LDN's prefix (the longest that matches), else the default."""
        if assigned is not None:
            return self[assigned]
        by_flag = self._by_flag.get(flag_id(system_title) or "")
        if by_flag is not None:
            return by_flag
        if ldn is not None:
            for prefix, profile in self._prefixes:
                if ldn.startswith(prefix):
                    return profile
        return self[self.default]


@dataclass(frozen=True, slots=True)
class Discovery:
    registry: ProfileRegistry
    problems: tuple[PluginProblem, ...]


def _last_line(exc: BaseException) -> str:
    return traceback.format_exception_only(type(exc), exc)[-1].strip()


def discover_profiles(package: ModuleType | None = None) -> Discovery:
    """Every meter profile in ``package`` (default ``sac.plugins``, wherever its modules are
    installed), checked; the broken ones are reported by name with the reason."""
    if package is None:
        import sac.plugins as package
    problems: list[PluginProblem] = []
    # import each module first: one that fails is named here (getPlugins would only log it)
    broken = set()
    for module in getModule(package.__name__).iterModules():
        try:
            module.load()
        except Exception as exc:  # a plugin's import may fail in any way
            broken.add(module.name)
            problems.append(PluginProblem(module.name, f"cannot import: {_last_line(exc)}"))
    found: dict[str, IMeterProfile] = {}
    for profile in getPlugins(IMeterProfile, package):
        label = getattr(profile, "name", repr(profile))
        try:
            verifyObject(IMeterProfile, profile)
            profile.validate()
        except (Invalid, PluginError) as exc:
            problems.append(PluginProblem(str(label), str(exc).strip()))
            continue
        except Exception as exc:  # validate() is the plugin's code
            problems.append(PluginProblem(str(label), f"validate() failed: {_last_line(exc)}"))
            continue
        if profile.name in found:
            problems.append(PluginProblem(profile.name, "another plugin has this name already"))
            continue
        found[profile.name] = profile
    if GENERIC_PROFILE not in found:
        problems.append(PluginProblem(GENERIC_PROFILE, "the generic profile is missing"))
    ordered = sorted(found.values(), key=lambda p: p.name)
    return Discovery(ProfileRegistry(ordered), tuple(problems))
