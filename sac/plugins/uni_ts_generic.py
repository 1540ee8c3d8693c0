"""The generic UNI/TS 11291-12-2 gas meter: the profile of a meter nothing else claims.

Objects of docs/uni-ts-11291.md §1, the PP4 push frames CF47/48/49 and the frame counters
CF51 (docs/uni-ts-11291.md §2.4), the valve by the IC 70 methods, general-glo-ciphering with the
system title present, AK = EK, the Italian clock deviation sign, battery autonomy in days.
Max PDU 504 and 80 s sessions: oneGasMeter's defaults for NB-IoT
[U: docs/uni-ts-11291.md §1.7, §3].
"""

from sac.profiles import GENERIC_PROFILE, MeterProfile
from sac.profiles.layouts import CF47, CF48, CF49, CF51

uni_ts_11291_12_2 = MeterProfile(
    name=GENERIC_PROFILE,
    description="UNI/TS 11291-12-2 gas meter (generic)",
    push_templates=(47, 48),
    layouts={layout.template_id: layout for layout in (CF47, CF48, CF49, CF51)},
)
