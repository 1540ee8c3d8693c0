"""Pietro Fiorentini meters, as their public captures show them.

How they differ from the generic profile:
- their push carries template 18, a 34-byte compact frame (test vectors TV1, real captures):
  UNIX time, the converted-volume index and the index under alarm, and the last daily
  load-profile entry (docs/uni-ts-11291.md §2.5; bytes 5-9 and the last two are not identified and
  are kept raw) -- the layout is an INFERENCE from the captures;
- ciphered APDUs to them carry an empty system title (``DB 00 ...``), as Fiorentini devices
  use on their local port and Gurux does in Italy mode (docs/uni-ts-11291.md §1.10, §3): the
  meter's title must be known in advance, which the SAC has from provisioning.
Matched by the FLAG id "FIO".
"""

from sac.dlms.compact import CompactLayout, fld
from sac.profiles import STANDARD_OBJECTS, MeterProfile
from sac.profiles.layouts import CF47, CF48, CF49, CF51

UNIX_TIME = STANDARD_OBJECTS["unix_time"].obis
INDEX = STANDARD_OBJECTS["converted_volume_index"].obis
INDEX_UNDER_ALARM = STANDARD_OBJECTS["converted_volume_index_under_alarm"].obis
DAILY_DIAGNOSTIC = STANDARD_OBJECTS["daily_diagnostic"].obis

FIORENTINI_18 = CompactLayout(
    18,
    "Fiorentini push (template 18)",
    (
        fld("unix_time", "u32", UNIX_TIME),
        fld("unidentified_5", "bytes", size=5),
        fld("converted_volume_index", "u32", INDEX),
        fld("converted_volume_index_under_alarm", "u32", INDEX_UNDER_ALARM),
        fld("daily_unix_time", "u32", UNIX_TIME),
        fld("daily_diagnostic", "u16", DAILY_DIAGNOSTIC),
        fld("daily_converted_volume_index", "u32", INDEX),
        fld("daily_converted_volume_index_under_alarm", "u32", INDEX_UNDER_ALARM),
        fld("unidentified_32", "bytes", size=2),
    ),
)

fiorentini = MeterProfile(
    name="fiorentini",
    description="Pietro Fiorentini (template 18 push, empty system title in ciphering)",
    manufacturers=("FIO",),
    push_templates=(18,),
    layouts={layout.template_id: layout for layout in (FIORENTINI_18, CF47, CF48, CF49, CF51)},
    omit_system_title=True,
)
