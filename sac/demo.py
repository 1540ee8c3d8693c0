"""`make demo`: decode the public real meter frames with sac's codec and print them.

Until the SAC's services exist (see the issues), the demo shows the codec at work on the
Pietro Fiorentini pushes (TV1) and the Honeywell CF30 buffer (TV2) of the shared spec.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

from sac.dlms.apdu import decode_apdu
from sac.dlms.compact import compact_buffer_of, decode_compact
from sac.dlms.layouts import STANDARD_LAYOUTS
from sac.dlms.security import SecurityContext, Suite0Cipher
from sac.dlms.wrapper import WrapperFramer

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "spec" / "vectors.json"


def main() -> int:
    if not VECTORS.exists():
        print(f"no test vectors at {VECTORS}", file=sys.stderr)
        return 1
    vectors = json.loads(VECTORS.read_text())["vectors"]
    framer = WrapperFramer(max_apdu_length=2048)
    for v in vectors:
        if not v["id"].startswith("TV1-"):
            continue
        pdu = framer.feed(bytes.fromhex(v["hex"]))[0]
        meter = SecurityContext(
            Suite0Cipher(bytes.fromhex(v["key_hex"])),
            b"SACSACSA",
            peer_system_title=bytes.fromhex(v["system_title_hex"]),
        )
        envelope = decode_apdu(pdu.apdu)
        notification = decode_apdu(meter.unprotect(envelope))
        buf = compact_buffer_of(notification.body)
        when = dt.datetime.fromtimestamp(int.from_bytes(buf[1:5], "big"), dt.UTC)
        print(
            f"{v['id']}: meter {envelope.system_title.hex()} IC {envelope.invocation_counter}"
            f" -> DATA-NOTIFICATION {notification.long_invoke_id_and_priority},"
            f" template {buf[0]}, meter time {when:%Y-%m-%d %H:%M:%SZ}"
        )
    cf30 = next(v for v in vectors if v["id"] == "TV2-CF30")
    frame = decode_compact(bytes.fromhex(cf30["hex"]), STANDARD_LAYOUTS)
    print(f"\nTV2 {frame.layout.name}:")
    for name, value in frame.values.items():
        shown = f"{len(value)} entries" if isinstance(value, list) else value
        print(f"  {name:32} {shown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
