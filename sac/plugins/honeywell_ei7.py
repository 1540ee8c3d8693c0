"""Honeywell (Elster) EI6/EI7-style meters, as Honeywell's own head-end code drives them.

How they differ from the generic profile (docs/uni-ts-11291.md §1.1, §1.6, §2.4, §5):
- they push CF30 (timeouts, valve, counters, current diagnostic, batteries, daily and
  hourly profile; test vector TV2) besides CF47/48/49/51;
- battery autonomy comes as the percentage of residual capacity (unit 56), not days;
- the valve is driven by the disconnect-control script table 0.0.10.0.106.255 through the
  single action schedule 0.0.15.0.1.255 (script 1 close, 2 enable opening), not IC 70;
- sessions of up to 120 s (TV2's session_max_duration), and the session timeouts
  0.1.94.39.52.255 are one of its settings (HW-EI7 `writeNetworkTimeout`).
Matched by the FLAG id "ELS" of their system titles.
"""

from sac.profiles import UNIT_PERCENT, MeterProfile, ValveMethod
from sac.profiles.layouts import CF30, CF47, CF48, CF49, CF51
from sac.profiles.settings import SESSION_TIMEOUTS, UNI_TS_SETTINGS

honeywell_ei7 = MeterProfile(
    name="honeywell-ei7",
    description="Honeywell/Elster EI6-EI7 (CF30, battery in %, valve by schedule scripts)",
    manufacturers=("ELS",),
    push_templates=(30,),
    layouts={layout.template_id: layout for layout in (CF30, CF47, CF48, CF49, CF51)},
    valve_method=ValveMethod.SCHEDULED_SCRIPT,
    battery_unit=UNIT_PERCENT,
    # as Honeywell's own head-end reads them (docs/uni-ts-11291.md §1.9, unconfirmed elsewhere)
    diagnostic_bits={
        3: "device error",
        4: "device error",
        5: "overflow",
        6: "device error",
        8: "battery low",
        9: "battery low",
    },
    session_budget=120.0,
    # its NB-IoT session timeouts are written as Honeywell's head-end writes them
    settings=(*UNI_TS_SETTINGS, SESSION_TIMEOUTS),
)
