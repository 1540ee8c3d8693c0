"""Codec benchmark: decrypt + decode of a ciphered CF47 push and of a ciphered GET-Response.

Every decoder gets the same bytes (benchmarks/peers.py builds them) and does the whole job:
wrapper -> general-glo-ciphering -> AES-GCM (tag checked) -> APDU -> value.

    sac         sac.dlms: decode_wrapper, SecurityContext.unprotect (title, counter and tag
                checked), decode_apdu, and for the push compact_buffer_of + decode_compact
                with the CF47 layout
    dlms-cosem  dlms-cosem 25.1.0 (benchmark-only peer); the CF47 fields unpacked with struct
    gurux-dlms  gurux-dlms 1.0.203 (test/benchmark-only peer; does not check the tag)
    raw AES-GCM cryptography's AES-GCM with a 12-byte tag on the known offsets, nothing else

All are measured in the same run, interleaved, pinned to one core; the figures that matter are
the ratios.  Run: ``make bench`` or ``.venv/bin/python benchmarks/bench_codec.py [seconds]``.
"""

from __future__ import annotations

import os
import statistics
import sys
from collections.abc import Callable

import peers

from sac.dlms.apdu import decode_apdu
from sac.dlms.compact import compact_buffer_of, decode_compact
from sac.dlms.security import SecurityContext, Suite0Cipher
from sac.dlms.wrapper import decode_wrapper
from sac.profiles.layouts import STANDARD_LAYOUTS

# one cipher per meter key, kept while the meter's sessions need it (as the listener will)
_METER_CIPHER = Suite0Cipher(peers.KEY)
_SAC_TITLE = b"SACSACSA"


def sac_push(frame: bytes) -> dict:
    pdu = decode_wrapper(frame, 2048)
    session = SecurityContext(_METER_CIPHER, _SAC_TITLE, peer_system_title=peers.SYSTEM_TITLE)
    notification = decode_apdu(session.unprotect(pdu.apdu))
    return decode_compact(compact_buffer_of(notification.body), STANDARD_LAYOUTS).values


def sac_get(frame: bytes) -> int:
    pdu = decode_wrapper(frame, 2048)
    session = SecurityContext(_METER_CIPHER, _SAC_TITLE, peer_system_title=peers.SYSTEM_TITLE)
    return int(decode_apdu(session.unprotect(pdu.apdu)).result)


DECODERS: dict[str, dict[str, Callable[[bytes], object]]] = {
    "push": {
        "sac": sac_push,
        "dlms-cosem": peers.dlms_cosem_push,
        "gurux-dlms": peers.gurux_push,
        "raw AES-GCM": peers.raw_decrypt,
    },
    "get": {
        "sac": sac_get,
        "dlms-cosem": peers.dlms_cosem_get,
        "gurux-dlms": peers.gurux_get,
        "raw AES-GCM": peers.raw_decrypt,
    },
}


def check_agreement() -> None:
    """Every decoder reads the same values before any is timed."""
    peers.self_check()
    values = sac_push(peers.PUSH_FRAME)
    expected = peers.CF47_FIELDS
    assert values["unix_time"] == expected["unix_time"]
    assert values["converted_volume_index"] == expected["index"]
    assert values["management_frame_counter"] == expected["mgmt_frame_counter"]
    assert values["valve_output_state"] is True and values["spare"] == b""
    assert sac_get(peers.GET_FRAME) == peers.REGISTER_VALUE


def main(seconds: float = 1.0, rounds: int = 3) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    check_agreement()
    print(f"messages/s, one core, best of {rounds} interleaved rounds of {seconds:.1f} s each\n")
    for message, decoders in DECODERS.items():
        frame = peers.FRAMES[message]
        samples: dict[str, list[float]] = {name: [] for name in decoders}
        for _ in range(rounds):
            for name, fn in decoders.items():
                run = seconds if name != "gurux-dlms" else min(seconds, 0.5)
                samples[name].append(peers.rate(fn, frame, run))
        best = {name: max(s) for name, s in samples.items()}
        spread = {name: statistics.pstdev(s) / max(s) for name, s in samples.items()}
        print(f"{message} ({len(frame)} bytes on the wire)")
        for name, r in best.items():
            print(f"  {name:12} {r:>10,.0f}/s   (spread {spread[name]:.0%})")
        sac = best["sac"]
        print(f"  sac / dlms-cosem   {sac / best['dlms-cosem']:6.2f}x   (target >= 5x)")
        print(f"  sac / gurux-dlms   {sac / best['gurux-dlms']:6.1f}x")
        print(f"  sac / raw AES-GCM  {sac / best['raw AES-GCM']:6.2f}x   (target >= 0.4x)")
        print()


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 1.0)
