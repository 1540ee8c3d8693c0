"""The decoders fed directly: every target of ``tests/dlms/test_fuzz.py`` (wrapper, APDU,
A-XDR data, ACSE, compact frames, ciphering, the client's and the meter's state machines)
and the push's inner path -- an authenticated DATA-NOTIFICATION through each installed
profile's compact layouts into readings, as the acquisition service takes it.

A target may raise sac's own errors (a refusal); anything else is a bug, kept as a frame of
the corpus."""

from __future__ import annotations

import datetime as dt
import random
import resource
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sac.dlms import Obis, decode_apdu
from sac.dlms.axdr import (
    Array,
    DoubleLongUnsigned,
    LongUnsigned,
    OctetString,
    Structure,
    decode_data,
    encode_data,
)
from sac.dlms.compact import compact_buffer_of, decode_compact
from sac.dlms.xdlms import DataNotification
from sac.errors import DecodeError, SacError
from sac.profiles import IMeterProfile, discover_profiles
from sac.services.readings import (
    UNIX_TIME,
    Capture,
    frame_readings,
    rows_to_events,
    rows_to_readings,
)
from sac.simulator.fleet import Fleet
from tests.dlms.test_fuzz import SEED_APDUS, TARGETS
from tests.fuzz.mutate import Mutator

REGISTRY = discover_profiles().registry
RECEIVED = dt.datetime(2026, 11, 21, tzinfo=dt.UTC)


def _inner(profile: IMeterProfile) -> Callable[[bytes], Any]:
    """The plaintext of a push, after its tag checked: decoded, through the layouts, to
    readings (what :meth:`Acquisition._open` does)."""

    def run(plain: bytes) -> None:
        notification = decode_apdu(plain)
        if not isinstance(notification, DataNotification):
            raise DecodeError("not a DATA-NOTIFICATION")
        frame = decode_compact(compact_buffer_of(notification.body), profile.layouts)
        frame_readings("FUZZ", profile, frame, received=RECEIVED, source="fuzz")

    return run


def push_plaintexts(profile: IMeterProfile, count: int = 8) -> list[bytes]:
    """Genuine DATA-NOTIFICATIONs of simulated meters of ``profile``, one per template."""
    fleet = Fleet(count, profile, clock=lambda: 1_790_000_000.0, reactor=None, seed=11)
    out = []
    for i, m in enumerate(fleet.meters):
        template = profile.push_templates[i % len(profile.push_templates)]
        m.advance()
        out.append(DataNotification(0, None, OctetString(m.compact_buffer(template))).to_bytes())
    return out


# a logbook's columns (time, event code, event counter) and a daily profile's (time, index)
_LOGBOOK = (Capture(1, UNIX_TIME, 2), Capture(1, Obis("0.0.96.11.0.255"), 2),
            Capture(1, Obis("0.0.96.15.0.255"), 2))  # fmt: skip
_PROFILE = (Capture(1, UNIX_TIME, 2), Capture(3, Obis("7.0.13.2.0.255"), 2))


def _logbook_rows(data: bytes) -> None:
    """A logbook's buffer as a GET answers it (A-XDR), to events (the poll's path)."""
    rows = decode_data(data)
    rows_to_events("FUZZ", Obis("7.0.99.98.0.255"), _LOGBOOK, rows, inverted_deviation=False,
                   received=RECEIVED, source="fuzz")  # fmt: skip


def _profile_rows(data: bytes) -> None:
    rows = decode_data(data)
    rows_to_readings("FUZZ", _PROFILE, rows, scalers={}, inverted_deviation=False,
                     received=RECEIVED, source="fuzz")  # fmt: skip


def _rows_seed(*rows: tuple[Any, ...]) -> bytes:
    return encode_data(Array([Structure(list(r)) for r in rows]))


def targets() -> list[tuple[str, Callable[[bytes], Any], list[bytes]]]:
    found = list(TARGETS)
    t, u32, u16 = 1_790_000_000, DoubleLongUnsigned, LongUnsigned
    found.append(
        (
            "logbook_rows",
            _logbook_rows,
            [_rows_seed((u32(t), u16(7), u16(1)), (u32(t + 60), u16(9), u16(2)))],
        )
    )
    found.append(("profile_rows", _profile_rows,
                  [_rows_seed((u32(t), u32(1234)), (u32(t + 86400), u32(1300)))]))  # fmt: skip
    for name, profile in sorted(REGISTRY.profiles.items()):
        found.append((f"push_inner[{name}]", _inner(profile), push_plaintexts(profile)))
    return found


@dataclass
class DirectRun:
    frames: int = 0
    refused: int = 0  # sac's own errors: the input refused cleanly
    accepted: int = 0
    per_target: Counter[str] = field(default_factory=Counter)
    bugs: list[tuple[str, bytes, str]] = field(default_factory=list)  # target, frame, error
    seconds: float = 0.0
    max_rss_kib: int = 0
    mutations: Counter[str] = field(default_factory=Counter)


def fuzz_direct(frames: int, seed: int = 1, max_bugs: int = 50) -> DirectRun:
    """``frames`` mutated (3 % wholly random) frames, round robin over the targets."""
    rng = random.Random(seed)
    chosen = targets()
    mutator = Mutator(rng, splice_with=SEED_APDUS)
    run = DirectRun()
    started = time.perf_counter()
    for i in range(frames):
        name, target, seeds = chosen[i % len(chosen)]
        data = mutator(rng.choice(seeds))
        run.frames += 1
        run.per_target[name] += 1
        try:
            target(data)
            run.accepted += 1
        except SacError:
            run.refused += 1
        except Exception as exc:
            if len(run.bugs) < max_bugs:
                where = traceback.extract_tb(exc.__traceback__)[-1]
                run.bugs.append(
                    (name, data, f"{type(exc).__name__}: {exc} at {where.filename}:{where.lineno}")
                )
    run.seconds = time.perf_counter() - started
    run.max_rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run.mutations = mutator.used
    return run
