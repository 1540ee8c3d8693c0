"""A simulated gas meter's life over time, whatever COSEM makes of it.

:class:`MeterLife` is advanced lazily to the time of its clock: gas drawn along a daily curve,
the battery draining, a daily load-profile entry at each gas day, now and then an event, and
the valve state machine (close; enable opening -> ready_for_reconnection -> opened by the
customer after a while, or back to closed when the opening validity ends).  Everything it
does is written to its logbooks.  :class:`sac.simulator.meter.SimulatedMeter` shows it as
COSEM objects.

Time is a function returning UNIX seconds (the fleet's clock, possibly accelerated); nothing
here sleeps or does I/O.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sac.profiles import VALVE_SCRIPTS, IMeterProfile, ValveAction

__all__ = ["MeterLife", "ValveState"]

ITALY = ZoneInfo("Europe/Rome")
GAS_DAY_START = 6  # local hour (docs/uni-ts-11291.md §1.2: 06:00 by default)
DAY = 86_400
LOG_SIZE = 64  # entries kept per logbook
PROFILE_DAYS = 62  # daily load-profile entries kept


class ValveState:
    """IC 70 control_state values (docs/uni-ts-11291.md §1.1)."""

    DISCONNECTED = 0  # closed
    CONNECTED = 1  # open
    READY = 2  # ready_for_reconnection: closed, the customer may open it


# Event codes written by the simulator (docs/uni-ts-11291.md §1.9)
EV_CLOCK_SYNCED = 12
EV_VALVE_CLOSED = 30
EV_VALVE_OPENED = 31
EV_TAMPER_START, EV_TAMPER_END = 80, 81
EV_BATTERY_LOW = 74
EV_READY_COMMAND = 110
EV_OPENING_START, EV_OPENING_END = 111, 112
EV_VALVE_FAILED = 114
EV_REMOTE_START = 171
EV_PDR_CHANGED = 168
EV_BILLING_CLOSED = 90  # periodically: at each gas month's start


_SCRIPT_ACTIONS = {script: action for action, script in VALVE_SCRIPTS.items()}


def _hourly_shape(hour: float) -> float:
    """Relative gas use over a day: a morning and an evening peak (mean about 1)."""
    return (
        0.35 + 1.1 * math.exp(-((hour - 7.5) ** 2) / 3) + 1.4 * math.exp(-((hour - 19.5) ** 2) / 5)
    )


def _season(day_of_year: int) -> float:
    """Heating: about 3.5x more in January than in July."""
    return 1.0 + 0.55 * math.cos(2 * math.pi * (day_of_year - 15) / 365.25)


@dataclass(slots=True)
class _Schedule:
    script: int | None = None
    at: float | None = None  # UNIX seconds, None: not set


class MeterLife:
    """What happens to one gas meter over time.  ``clock`` gives the fleet's time (UNIX
    seconds); ``rng`` may be shared by a fleet (a Random costs 2.5 kB)."""

    __slots__ = (
        "_fraction",
        "battery",
        "clock",
        "clock_offset",
        "current_diagnostic",
        "daily",
        "daily_diagnostic",
        "enabled_at",
        "event_counter",
        "events",
        "index_litres",
        "last_day",
        "last_update",
        "litres_per_day",
        "metro_counter",
        "metro_events",
        "open_at",
        "param_events",
        "profile",
        "rng",
        "schedule",
        "tamper_until",
        "under_alarm_litres",
        "valve_state",
    )

    def __init__(
        self,
        *,
        profile: IMeterProfile,
        clock: Callable[[], float],
        rng: random.Random,
        litres_per_day: float,
        index_litres: int,
    ) -> None:
        self.profile = profile
        self.clock = clock
        self.rng = rng
        self.litres_per_day = litres_per_day
        self.index_litres = index_litres
        self.under_alarm_litres = 0
        self._fraction = 0.0
        self.current_diagnostic = 0
        self.daily_diagnostic = 0
        # days of autonomy, or percent, as the profile counts it
        self.battery = 93 if profile.battery_unit == 56 else 3650
        self.valve_state = ValveState.CONNECTED
        self.enabled_at: float | None = None
        self.open_at: float | None = None  # when the customer will press the button
        self.tamper_until: float | None = None
        self.event_counter = 0
        self.metro_counter = 0
        self.events: deque[tuple[int, int, int, int]] = deque(maxlen=LOG_SIZE)
        self.metro_events: deque[tuple[int, int, int, int, int]] = deque(maxlen=LOG_SIZE)
        # the parameter monitor logbook: (time, metrological counter, code) of each change
        self.param_events: deque[tuple[int, int, int]] = deque(maxlen=LOG_SIZE)
        self.daily: deque[tuple[int, int, int, int]] = deque(maxlen=PROFILE_DAYS)
        self.schedule = _Schedule()
        self.clock_offset = 0.0  # the meter's clock minus the fleet's (a SET of the clock)
        now = self.now()
        self.last_update = now
        self.last_day = self._gas_day(now)

    # --- time and the meter's life ---------------------------------------------------------

    def now(self) -> float:
        return self.clock() + self.clock_offset

    @staticmethod
    def _gas_day(t: float) -> int:
        """Days since the epoch, gas days starting at 06:00 Italian time (05:00 UTC here)."""
        return int((t - 5 * 3600) // DAY)

    @property
    def valve_open(self) -> bool:
        return self.valve_state == ValveState.CONNECTED

    def advance(self) -> None:
        """Bring the meter to its clock's time: gas, battery, profile entries, events and the
        valve's own transitions, in order."""
        now = self.now()
        t = self.last_update
        while t < now:
            step = min(now, (t // 3600 + 1) * 3600)  # hour by hour
            self._hour(t, step)
            t = step
        self.last_update = now

    def _hour(self, start: float, end: float) -> None:
        for moment, action in sorted(self._due(start, end)):
            action(moment)
        if self.valve_open:
            when = dt.datetime.fromtimestamp(start, ITALY)
            rate = self.litres_per_day / 24 * _hourly_shape(when.hour + 0.5)
            self._fraction += rate * _season(when.timetuple().tm_yday) * (end - start) / 3600
            whole = int(self._fraction)
            self._fraction -= whole
            self.index_litres += whole
            if self.current_diagnostic:
                self.under_alarm_litres += whole
        day = self._gas_day(end)
        while self.last_day < day:
            self.last_day += 1
            self._new_gas_day(self.last_day * DAY + 5 * 3600)

    def _due(self, start: float, end: float) -> list[tuple[float, Callable[[float], None]]]:
        due: list[tuple[float, Callable[[float], None]]] = []
        if self.open_at is not None and start <= self.open_at < end:
            due.append((self.open_at, self._customer_opens))
        if self.enabled_at is not None and self.valve_state == ValveState.READY:
            # (a validity shortened by a SET may already be over: it ends now)
            expiry = max(self.enabled_at + self.opening_validity(), start)
            if start <= expiry < end:
                due.append((expiry, self._opening_expires))
        if self.schedule.at is not None and start <= self.schedule.at < end:
            due.append((self.schedule.at, self._run_schedule))
        if self.tamper_until is not None and start <= self.tamper_until < end:
            due.append((self.tamper_until, self._tamper_ends))
        return due

    def _new_gas_day(self, t: float) -> None:
        if self.profile.battery_unit == 56:
            if self.rng.random() < 1 / 36:
                self.battery = max(0, self.battery - 1)
        else:
            self.battery = max(0, self.battery - 1)
        low = self.battery < (10 if self.profile.battery_unit == 56 else 365)
        if low and not self.daily_diagnostic & 0x0100:
            self.daily_diagnostic |= 0x0100  # battery low (HW-A2: bits 8-9)
            self._event(t, EV_BATTERY_LOW)
        if dt.datetime.fromtimestamp(t, ITALY).day == 1:
            self._event(t, EV_BILLING_CLOSED)
        if self.rng.random() < 0.02:  # now and then someone tampers with it
            self.current_diagnostic |= 0x0008
            self.tamper_until = t + self.rng.uniform(600, 7200)
            self._event(t, EV_TAMPER_START)
        self.daily.append(
            (int(t), self.daily_diagnostic, self.index_litres, self.under_alarm_litres)
        )

    def _tamper_ends(self, t: float) -> None:
        self.current_diagnostic &= ~0x0008
        self.tamper_until = None
        self._event(t, EV_TAMPER_END)

    def _event(self, t: float, code: int) -> None:
        self.event_counter = (self.event_counter + 1) & 0xFFFF
        self.events.append((int(t), self.event_counter, code, self.daily_diagnostic))

    def param_event(self, t: float, code: int) -> None:
        """A parameter changed (a SET): in the event logbook and the parameter logbook."""
        self._event(t, code)
        self.metro_counter = (self.metro_counter + 1) & 0xFFFF
        self.param_events.append((int(t), self.metro_counter, code))

    def _metro_event(self, t: float, code: int) -> None:
        self.metro_counter = (self.metro_counter + 1) & 0xFFFF
        self.metro_events.append(
            (int(t), code, self.metro_counter, self.index_litres, self.daily_diagnostic)
        )

    # --- the valve -------------------------------------------------------------------------

    def operate_valve(self, action: ValveAction, t: float | None = None) -> bool:
        """Run a valve command now; False (and an event) if the state does not allow it."""
        t = self.now() if t is None else t
        if action is ValveAction.CLOSE:
            if self.valve_state != ValveState.DISCONNECTED:
                self.valve_state = ValveState.DISCONNECTED
                self.enabled_at = self.open_at = None
                self._metro_event(t, EV_VALVE_CLOSED)
            return True
        if self.valve_state != ValveState.DISCONNECTED:
            self._metro_event(t, EV_VALVE_FAILED)  # enable opening of a valve not closed
            return False
        self.valve_state = ValveState.READY
        self.enabled_at = t
        self._metro_event(t, EV_READY_COMMAND)
        self._metro_event(t, EV_OPENING_START)
        # the customer usually comes within hours; one in five never does
        self.open_at = t + self.rng.uniform(600, 6 * 3600) if self.rng.random() < 0.8 else None
        return True

    def opening_validity(self) -> float:
        """Seconds an enabled opening stays valid (a day here; the meter's setting in
        :class:`sac.simulator.meter.SimulatedMeter`)."""
        return DAY

    def _customer_opens(self, t: float) -> None:
        self.open_at = None
        if self.valve_state == ValveState.READY:
            self.valve_state = ValveState.CONNECTED
            self.enabled_at = None
            self._metro_event(t, EV_VALVE_OPENED)

    def _opening_expires(self, t: float) -> None:
        self.valve_state = ValveState.DISCONNECTED
        self.enabled_at = self.open_at = None
        self._metro_event(t, EV_OPENING_END)

    def _run_schedule(self, t: float) -> None:
        script, self.schedule = self.schedule.script, _Schedule()
        action = _SCRIPT_ACTIONS.get(script or 0)
        if action is not None:
            self.operate_valve(action, t)
