"""The simulated meter's object table, from its profile's object map.

Where each quantity lives is the profile's word (``profile.objects``, the generic catalogue
``sac.profiles.STANDARD_OBJECTS`` for what it does not name); a vendor profile with other
OBIS codes is simulated at its own addresses.  Built once a profile.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Mapping
from dataclasses import dataclass

from sac.dlms import Obis
from sac.dlms.axdr import Array, Integer, LongUnsigned, OctetString, Structure
from sac.profiles import STANDARD_OBJECTS, CosemRef, IMeterProfile, compact_template

__all__ = ["ObjectTable", "object_table"]

# the quantities the simulated meter has (besides its profile's compact data objects)
SIMULATED = (
    "ldn", "pdr", "serial_number", "converted_volume_index",
    "converted_volume_index_under_alarm", "current_diagnostic", "daily_diagnostic",
    "battery_autonomy", "valve", "valve_script_table", "valve_schedule", "clock", "unix_time",
    "frame_counter_management", "frame_counter_management_offline",
    "metrological_event_counter", "event_counter", "daily_profile", "event_logbook",
    "metrological_logbook", "parameter_logbook", "session_timeouts",
    # the settings (sac.simulator.settings)
    "push_setup", "push_schedule", "billing_period_start", "valve_configuration", "valve_pin",
    "opening_validity", "no_communication_threshold", "tamper_threshold",
)  # fmt: skip
# what the Public client may read (docs/uni-ts-11291.md §1.3, §5: identity, counter)
PUBLIC = (
    "ldn",
    "frame_counter_management",
    "frame_counter_management_offline",
    "serial_number",
    "unix_time",
    "clock",
)
# the columns (capture objects) of the load profile and the logbooks, in order
COLUMNS = {
    "daily_profile": (
        "unix_time",
        "daily_diagnostic",
        "converted_volume_index",
        "converted_volume_index_under_alarm",
    ),
    "event_logbook": ("unix_time", "event_counter", "event_code", "daily_diagnostic"),
    "metrological_logbook": (
        "unix_time",
        "metrological_event_code",
        "metrological_event_counter",
        "converted_volume_index",
        "daily_diagnostic",
    ),
    # (docs/uni-ts-11291.md §1.5 gives the counter and the IC 65 parameter monitor; the
    # simulator logs the change's event code in its place, which the SAC reads as an event)
    "parameter_logbook": ("unix_time", "metrological_event_counter", "metrological_event_code"),
}


def _capture(ref: CosemRef) -> Structure:
    return Structure(
        (LongUnsigned(ref.class_id), OctetString(bytes(ref.obis)), Integer(2), LongUnsigned(0))
    )


@dataclass(frozen=True, slots=True)
class ObjectTable:
    """Quantities and logical names both ways, and the buffers' columns."""

    ln: Mapping[str, Obis]  # quantity: where it lives
    quantity: Mapping[Obis, str]  # logical name: the quantity it holds
    public: frozenset[Obis]
    columns: Mapping[str, Array]  # buffer quantity: its capture objects (attribute 3)
    column_names: Mapping[str, tuple[Obis, ...]]  # buffer quantity: its columns' names
    times: frozenset[Obis]  # the objects that are times (UNIX time, clock)
    templates: frozenset[int]  # the compact data objects 0.0.66.0.<id>.255 it has

    def knows(self, ln: Obis) -> bool:
        return ln in self.quantity or compact_template(ln) in self.templates


def _build(profile: IMeterProfile) -> ObjectTable:
    objects = ChainMap(dict(profile.objects), dict(STANDARD_OBJECTS))
    wanted = {*SIMULATED, *(q for names in COLUMNS.values() for q in names)}
    ln = {q: objects[q].obis for q in wanted}
    return ObjectTable(
        ln=ln,
        quantity={ln[q]: q for q in SIMULATED},
        public=frozenset(ln[q] for q in PUBLIC),
        columns={b: Array(_capture(objects[q]) for q in names) for b, names in COLUMNS.items()},
        column_names={b: tuple(ln[q] for q in names) for b, names in COLUMNS.items()},
        times=frozenset((ln["unix_time"], ln["clock"])),
        templates=frozenset(profile.layouts),
    )


_TABLES: dict[int, tuple[IMeterProfile, ObjectTable]] = {}


def object_table(profile: IMeterProfile) -> ObjectTable:
    """The object table of a profile's meters, built once (kept with its profile, whose id
    stays its own while it lives)."""
    known = _TABLES.get(id(profile))
    if known is None or known[0] is not profile:
        known = _TABLES[id(profile)] = (profile, _build(profile))
    return known[1]
