"""A simulated UNI/TS 11291 gas meter: its life (:mod:`sac.simulator.life`) as COSEM objects.

:class:`SimulatedMeter` is a :class:`sac.dlms.server.CosemModel` (the server association
machine serves it): who the meter is (LDN, system title, key, PDR, counters), the values of
its objects and its compact frames, and what GET, SET and ACTION do to it.  Each request
first brings its life to the time of its clock.  The object set, access rights and encodings
follow docs/uni-ts-11291.md §1 and the meter's profile.  The settings the SAC writes (push
schedule, destination, window, randomisation and template, end-of-billing start, valve
configuration, PIN and opening validity, thresholds) are kept and checked by
:mod:`sac.simulator.settings`; each accepted one logs a parameter event, and one that moves
the pushes asks the fleet to plan the next push again (``replan``).
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from sac.dlms import Obis
from sac.dlms.axdr import (
    Array,
    DoubleLongUnsigned,
    Enum,
    Integer,
    Long,
    LongUnsigned,
    OctetString,
    Structure,
    Unsigned,
    VisibleString,
)
from sac.dlms.compact import CompactField
from sac.dlms.cosem import ActionResult, DataAccessResult
from sac.dlms.cosemtime import CosemDate, CosemDateTime, CosemTime
from sac.dlms.selective import select
from sac.dlms.xdlms import NO_VALUE, AttributeDescriptor, MethodDescriptor, SelectiveAccess
from sac.errors import DecodeError
from sac.profiles import (
    STANDARD_OBJECTS,
    VALVE_METHODS,
    VALVE_SCRIPTS,
    IMeterProfile,
    ValveMethod,
    compact_template,
)
from sac.simulator.life import (
    DAY,
    EV_CLOCK_SYNCED,
    EV_PDR_CHANGED,
    ITALY,
    LOG_SIZE,
    PROFILE_DAYS,
    MeterLife,
)
from sac.simulator.objects import object_table
from sac.simulator.settings import DEFAULTS, QUANTITIES, SETTINGS, Refused, Settings, Unmatched

__all__ = ["SimulatedMeter"]

MANAGEMENT, PUBLIC = 1, 16
UNIT_M3 = 14  # DLMS unit: corrected m3 (the index is in litres: scaler -3)

# the event logbook where the generic profile keeps it (tests make a meter lack it)
EVENT_LOG = STANDARD_OBJECTS["event_logbook"].obis
_METHOD_ACTIONS = {method: action for action, method in VALVE_METHODS.items()}

_INTEGERS = frozenset(("u8", "i8", "enum", "u16", "i16", "u32", "i32", "u64", "i64"))
_ZEROS: dict[str, Any] = {
    "bool": False,
    "f32": 0.0,
    "f64": 0.0,
    "octet-string": b"",
    "visible-string": "",
    "entries": [],
}
# the compact-frame fields the simulated meter does not vary (CF30's settings and batteries,
# counters and parts it does not keep, the spare and the undecoded parts)
_FIXED_FIELDS: dict[str, Any] = {
    "pp4_network_status": 0,
    "billing_period_counter": 0,
    "snapshot_period_data": bytes(50),
    "management_frame_counter_offline": 0,
    "guarantor_frame_counter": 0,
    "installer_frame_counter": 0,
    "spare": b"",
    "inactivity_timeout": 30,
    "network_attach_timeout": 600,
    "batteries_in_use": 1,
    "batteries_present": 1,
    "secondary_battery_residual_pct": 0,
    "volume_scaler": -3,
    "volume_unit": UNIT_M3,
    "temperature_scaler": -2,
    "temperature_unit": 52,
    "unidentified_5": bytes(5),
    "unidentified_32": b"\x01\x00",
}


class SimulatedMeter(MeterLife):
    """One gas meter.  ``clock`` gives the fleet's time (UNIX seconds); ``rng`` may be shared
    by a fleet (a Random costs 2.5 kB)."""

    __slots__ = (
        "key",
        "ldn",
        "missing",
        "objects",
        "our_counter",
        "pdr",
        "replan",
        "sac_counter",
        "sac_system_title",
        "serial",
        "settings",
        "system_title",
    )

    def __init__(
        self,
        *,
        ldn: str,
        system_title: bytes,
        key: bytes,
        profile: IMeterProfile,
        clock: Callable[[], float],
        rng: random.Random,
        pdr: str = "",
        serial: int = 0,
        litres_per_day: float = 3000.0,
        index_litres: int = 0,
        invocation_counter: int = 1,
        sac_system_title: bytes = b"SACSACSA",
    ) -> None:
        super().__init__(
            profile=profile,
            clock=clock,
            rng=rng,
            litres_per_day=litres_per_day,
            index_litres=index_litres,
        )
        self.ldn = ldn
        self.system_title = system_title
        self.key = key
        self.objects = object_table(profile)  # where its quantities live, as its profile says
        self.pdr = pdr
        self.serial = serial
        # ciphering of the Management client: our next counter, the SAC's last one
        self.our_counter = invocation_counter
        self.sac_counter: int | None = None
        self.sac_system_title = sac_system_title
        # objects this meter's firmware lacks: answered object-undefined (a quirk to test with)
        self.missing: frozenset[Obis] = frozenset()
        # what the SAC set (sac.simulator.settings): shared defaults until a SET
        self.settings: Settings = DEFAULTS
        # push mode: its fleet's, called when a SET moves its next push
        self.replan: Callable[[SimulatedMeter], None] | None = None

    # --- values ----------------------------------------------------------------------------

    def opening_validity(self) -> float:
        return self.settings.opening_validity * 60.0

    def frame_counter(self) -> int:
        """0.0.43.1.1.255: the last counter the Management client used (it sends FC + 1)."""
        return self.sac_counter or 0

    def _date_time(self, t: float) -> OctetString:
        local = dt.datetime.fromtimestamp(t, ITALY)
        inverted = self.profile.inverted_deviation
        return OctetString(
            CosemDateTime.from_datetime(local, inverted_deviation=inverted).to_bytes()
        )

    def _daily_entries(self) -> list[dict[str, int]]:
        """The last three entries of the daily load profile, the newest first."""
        return [
            {
                "unix_time": u,
                "daily_diagnostic": d,
                "converted_volume_index": i,
                "converted_volume_index_under_alarm": a,
            }
            for u, d, i, a in list(self.daily)[-3:][::-1]
        ]

    def compact_values(self) -> dict[str, Any]:
        """Every field any shipped layout names, from the meter's state now."""
        now = int(self.now())
        entries = self._daily_entries()
        # the last daily entry: now's values before the first gas day ends
        last = (
            entries[0]
            if entries
            else {
                "unix_time": now,
                "converted_volume_index": self.index_litres,
                "converted_volume_index_under_alarm": self.under_alarm_litres,
            }
        )
        return {
            **_FIXED_FIELDS,
            "unix_time": now,
            "valve_output_state": self.valve_open,
            "valve_control_state": self.valve_state,
            "metrological_event_counter": self.metro_counter,
            "event_counter": self.event_counter,
            "daily_diagnostic": self.daily_diagnostic,
            "current_diagnostic": self.current_diagnostic,
            "converted_volume_index": self.index_litres,
            "converted_volume_index_under_alarm": self.under_alarm_litres,
            "daily_load_profile": entries,
            "management_frame_counter": self.frame_counter(),
            "logical_device_name": self.ldn,
            "session_max_duration": int(self.profile.session_budget),
            "primary_battery_residual_pct": min(self.battery, 100),
            "daily_readings": entries,
            "interval_data": [],
            "daily_unix_time": last["unix_time"],
            "daily_converted_volume_index": last["converted_volume_index"],
            "daily_converted_volume_index_under_alarm": last["converted_volume_index_under_alarm"],
        }

    def compact_buffer(self, template_id: int) -> bytes:
        """The compact frame of ``template_id``: each field from the meter's state (a field
        of another name, as a vendor's layout has, from the object it is bound to)."""
        layout = self.profile.layouts[template_id]
        values = self.compact_values()
        return layout.encode(
            {f.name: values[f.name] if f.name in values else self._field(f) for f in layout.fields}
        )

    def _field(self, f: CompactField) -> Any:
        """A compact field's value from the object and attribute it names; a zero of its
        kind when the meter has no such value."""
        value = self._value(f.obis, f.attribute, None) if f.obis is not None else None
        if isinstance(value, DataAccessResult):
            value = None
        if f.kind == "bool" and isinstance(value, bool):
            return value
        if f.kind in _INTEGERS and isinstance(value, int):
            return int(value)
        if f.kind == "octet-string" and isinstance(value, bytes):
            return bytes(value)
        if f.kind == "bytes":
            return (
                bytes(value) if isinstance(value, bytes) and len(value) == f.size else bytes(f.size)
            )
        return _ZEROS.get(f.kind, 0)

    # --- CosemModel ------------------------------------------------------------------------

    def get(
        self, client_sap: int, attribute: AttributeDescriptor, access: SelectiveAccess | None
    ) -> Any:
        ln, a = attribute.instance, attribute.attribute
        if client_sap == PUBLIC and ln not in self.objects.public:
            return DataAccessResult.READ_WRITE_DENIED
        if client_sap not in (PUBLIC, MANAGEMENT):
            return DataAccessResult.READ_WRITE_DENIED
        self.advance()
        if ln in self.missing:
            return DataAccessResult.OBJECT_UNDEFINED
        if a == 1:
            known = self.objects.knows(ln)
            return OctetString(bytes(ln)) if known else DataAccessResult.OBJECT_UNDEFINED
        try:
            return self._value(ln, a, access)
        except (DecodeError, ValueError, TypeError, IndexError):
            return DataAccessResult.OTHER_REASON

    def _value(self, ln: Obis, a: int, access: SelectiveAccess | None) -> Any:
        q = self.objects.quantity.get(ln)
        now = self.now()
        if a == 2 and q in _SIMPLE:
            return _SIMPLE[q](self, now)
        if q in _REGISTERS and a in (2, 3):
            value, scaler, unit = _REGISTERS[q](self)
            return value if a == 2 else Structure((Integer(scaler), Enum(unit)))
        if q == "valve":
            return {
                2: lambda: bool(self.valve_open),
                3: lambda: Enum(self.valve_state),
                4: lambda: Enum(1),  # control_mode 1: remote disconnect, local reconnect
            }.get(a, lambda: DataAccessResult.OBJECT_UNAVAILABLE)()
        if q == "clock":
            return {
                2: lambda: self._date_time(now),
                # time_zone: CET with the sign its date-times' deviation has (+60 in Italy)
                3: lambda: Long(60 if self.profile.inverted_deviation else -60),
            }.get(a, lambda: DataAccessResult.OBJECT_UNAVAILABLE)()
        if q == "valve_schedule" and a == 2:
            script = self.schedule.script or 0
            scripts = self.objects.ln["valve_script_table"]
            return Structure((OctetString(bytes(scripts)), LongUnsigned(script)))
        if q == "valve_script_table" and a == 2:
            return Array(Structure((LongUnsigned(n), Array())) for n in VALVE_SCRIPTS.values())
        if q in ("daily_profile", "event_logbook", "metrological_logbook", "parameter_logbook"):
            return self._profile(q, a, access)
        if q in QUANTITIES:
            setting = SETTINGS.get((q, a))
            if setting is None:
                return DataAccessResult.OBJECT_UNAVAILABLE
            return setting.get(self.settings, self.profile)
        template = compact_template(ln)
        if template in self.objects.templates:
            if a == 2:
                return OctetString(self.compact_buffer(template))
            if a == 4:
                return Unsigned(template)
        if self.objects.knows(ln):
            return DataAccessResult.OBJECT_UNAVAILABLE
        return DataAccessResult.OBJECT_UNDEFINED

    def _rows(self, quantity: str) -> list[Structure]:
        if quantity == "daily_profile":
            return [
                Structure(
                    (
                        DoubleLongUnsigned(u),
                        LongUnsigned(d),
                        DoubleLongUnsigned(i),
                        DoubleLongUnsigned(al),
                    )
                )
                for u, d, i, al in self.daily
            ]
        if quantity == "event_logbook":
            return [
                Structure(
                    (DoubleLongUnsigned(u), LongUnsigned(n), LongUnsigned(c), LongUnsigned(d))
                )
                for u, n, c, d in self.events
            ]
        if quantity == "parameter_logbook":
            return [
                Structure((DoubleLongUnsigned(u), LongUnsigned(n), LongUnsigned(c)))
                for u, n, c in self.param_events
            ]
        return [
            Structure(
                (
                    DoubleLongUnsigned(u),
                    LongUnsigned(c),
                    LongUnsigned(n),
                    DoubleLongUnsigned(i),
                    LongUnsigned(d),
                )
            )
            for u, c, n, i, d in self.metro_events
        ]

    def _profile(self, quantity: str, a: int, access: SelectiveAccess | None) -> Any:
        """A load profile or logbook (IC 7); selective access by range on the clock or the
        UNIX time, or by entry (docs/uni-ts-11291.md §1.5)."""
        rows = self._rows(quantity)
        period = DAY if quantity == "daily_profile" else 0
        if a == 2:
            chosen = select(
                rows,
                access,
                columns=self.objects.column_names[quantity],
                times=self.objects.times,
                inverted_deviation=self.profile.inverted_deviation,
            )
            return Array(chosen)
        return {
            3: lambda: self.objects.columns[quantity],
            4: lambda: DoubleLongUnsigned(period),
            5: lambda: Enum(1),  # fifo
            7: lambda: DoubleLongUnsigned(len(rows)),
            8: lambda: DoubleLongUnsigned(LOG_SIZE if period == 0 else PROFILE_DAYS),
        }.get(a, lambda: DataAccessResult.OBJECT_UNAVAILABLE)()

    def set(self, client_sap: int, attribute: AttributeDescriptor, value: Any) -> DataAccessResult:
        if client_sap != MANAGEMENT:
            return DataAccessResult.READ_WRITE_DENIED
        self.advance()
        ln, a = attribute.instance, attribute.attribute
        q = self.objects.quantity.get(ln)
        try:
            if q == "pdr" and a == 2:
                text = value.decode("ascii") if isinstance(value, bytes) else str(value)
                if len(text) > 14:
                    return DataAccessResult.TYPE_UNMATCHED
                self.pdr = text
                self.param_event(self.now(), EV_PDR_CHANGED)
                return DataAccessResult.SUCCESS
            if q == "clock" and a == 2:
                inverted = self.profile.inverted_deviation
                wanted = CosemDateTime.from_bytes(bytes(value)).to_datetime(
                    inverted_deviation=inverted
                )
                if wanted.tzinfo is None:
                    return DataAccessResult.TYPE_UNMATCHED
                self.clock_offset = wanted.timestamp() - self.clock()
                self.last_update = min(self.last_update, self.now())
                self._event(self.now(), EV_CLOCK_SYNCED)
                return DataAccessResult.SUCCESS
            if q == "valve_schedule" and self.profile.valve_method is ValveMethod.SCHEDULED_SCRIPT:
                return self._set_schedule(a, value)
            if q is not None and (q, a) in SETTINGS:
                return self._set_setting(q, a, value)
        except (DecodeError, ValueError, TypeError, IndexError, AttributeError):
            return DataAccessResult.TYPE_UNMATCHED
        if self.objects.knows(ln):
            return DataAccessResult.READ_WRITE_DENIED
        return DataAccessResult.OBJECT_UNDEFINED

    def _set_setting(self, q: str, a: int, value: Any) -> DataAccessResult:
        """A setting (sac.simulator.settings): kept, logged, and the next push moved when it
        moves it; nothing changes on a refusal."""
        setting = SETTINGS[(q, a)]
        try:
            parsed = setting.parse(value, self.profile)
        except Unmatched:
            return DataAccessResult.TYPE_UNMATCHED
        except Refused:
            return DataAccessResult.OTHER_REASON
        self.settings = replace(self.settings, **{setting.field: parsed})
        self.param_event(self.now(), setting.event)
        if setting.push and self.replan is not None:
            self.replan(self)
        return DataAccessResult.SUCCESS

    def _set_schedule(self, a: int, value: Any) -> DataAccessResult:
        if a == 2:
            table, script = Obis(bytes(value[0])), int(value[1])
            if (
                table != self.objects.ln["valve_script_table"]
                or script not in VALVE_SCRIPTS.values()
            ):
                return DataAccessResult.OTHER_REASON
            self.schedule.script = script
            return DataAccessResult.SUCCESS
        if a == 4:
            [when] = value
            time_raw, date_raw = bytes(when[0]), bytes(when[1])
            if self.schedule.script is None:
                return DataAccessResult.OTHER_REASON  # nothing to run
            now = self.now()
            if time_raw == b"\xff" * 4 and date_raw == b"\xff" * 5:
                self.schedule.at = now
            else:
                t, d = CosemTime.from_bytes(time_raw), CosemDate.from_bytes(date_raw)
                local = dt.datetime.combine(d.to_date(), t.to_time(), ITALY)
                self.schedule.at = max(local.timestamp(), now)
            if self.schedule.at <= now:
                self._run_schedule(now)
            return DataAccessResult.SUCCESS
        return DataAccessResult.READ_WRITE_DENIED

    def action(
        self, client_sap: int, method: MethodDescriptor, parameters: Any
    ) -> tuple[ActionResult, Any]:
        if client_sap != MANAGEMENT:
            return ActionResult.READ_WRITE_DENIED, NO_VALUE
        self.advance()
        if method.instance != self.objects.ln["valve"] or method.class_id != 70:
            return ActionResult.OBJECT_UNDEFINED, NO_VALUE
        if self.profile.valve_method is not ValveMethod.DISCONNECT_CONTROL:
            return ActionResult.OBJECT_UNAVAILABLE, NO_VALUE  # this model uses the scripts
        action = _METHOD_ACTIONS.get(method.method)
        if action is None:
            return ActionResult.OBJECT_UNDEFINED, NO_VALUE
        if not self.operate_valve(action):
            return ActionResult.TEMPORARY_FAILURE, NO_VALUE
        return ActionResult.SUCCESS, NO_VALUE


# the values of the plain objects (attribute 2), by quantity
_SIMPLE: dict[str, Callable[[SimulatedMeter, float], Any]] = {
    "ldn": lambda m, now: OctetString(m.ldn.encode("ascii")),
    "pdr": lambda m, now: VisibleString(m.pdr),
    "serial_number": lambda m, now: OctetString(m.system_title[2:][::-1]),
    "unix_time": lambda m, now: DoubleLongUnsigned(int(now)),
    "frame_counter_management": lambda m, now: DoubleLongUnsigned(m.frame_counter()),
    "frame_counter_management_offline": lambda m, now: DoubleLongUnsigned(0),
    "metrological_event_counter": lambda m, now: LongUnsigned(m.metro_counter),
    "event_counter": lambda m, now: LongUnsigned(m.event_counter),
    "daily_diagnostic": lambda m, now: LongUnsigned(m.daily_diagnostic),
    "session_timeouts": lambda m, now: Structure(
        (
            DoubleLongUnsigned(int(m.profile.session_budget)),
            DoubleLongUnsigned(30),
            DoubleLongUnsigned(600),
        )
    ),
}
# the registers (IC 3): value, scaler, unit
_REGISTERS: dict[str, Callable[[SimulatedMeter], tuple[Any, int, int]]] = {
    "converted_volume_index": lambda m: (DoubleLongUnsigned(m.index_litres), -3, UNIT_M3),
    "converted_volume_index_under_alarm": lambda m: (
        DoubleLongUnsigned(m.under_alarm_litres),
        -3,
        UNIT_M3,
    ),
    "current_diagnostic": lambda m: (LongUnsigned(m.current_diagnostic), 0, 255),
    "battery_autonomy": lambda m: (LongUnsigned(m.battery), 0, m.profile.battery_unit),
}
