"""One fuzzing run: the decoders directly, then a real ``twistd sac`` (its push listener) and
the polling client over loopback; the findings and the figures.  ``python -m tests.fuzz``
runs it with the issue's counts, ``tests/fuzz/test_fuzz_wire.py`` with short ones."""

from __future__ import annotations

import hashlib
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import treq

from sac.store.connector import Store
from tests.fuzz.direct import DirectRun, fuzz_direct
from tests.fuzz.wire import WireFuzz, WireRun, rss_kib
from tests.run.test_twistd import write_config
from tests.run.twistd import Twistd, port
from tests.store.conftest import MASTER

ENV = {"SAC_MASTER_KEY": MASTER.secret.hex()}
CRASH_LINES = re.compile(r"Traceback|Unhandled|unexpected error")


@dataclass
class Report:
    direct: DirectRun | None = None
    wire: WireRun | None = None
    sac_rss_kib: list[int] = field(default_factory=list)  # twistd's, sampled during the run
    sac_crashes: list[str] = field(default_factory=list)  # log lines of unexpected errors
    sac_metrics: dict[str, float] = field(default_factory=dict)
    canary_stored_counter: int | None = None

    @property
    def frames(self) -> int:
        return (self.direct.frames if self.direct else 0) + (self.wire.frames if self.wire else 0)

    def problems(self) -> list[str]:
        """Everything that says the SAC misbehaved (empty: a clean run)."""
        found = []
        if self.direct is not None:
            found += [f"decoder {t}: {e} on {d.hex()}" for t, d, e in self.direct.bugs]
        if self.wire is not None:
            w = self.wire
            found += w.poll_bugs + [f"logged in the polling client: {f}" for f in w.logged_failures]
            found += [f"canary: {f}" for f in w.canary_failures]
            if w.acknowledged_counters and self.canary_stored_counter != max(
                w.acknowledged_counters
            ):
                found.append(
                    f"canary: last acknowledged counter {max(w.acknowledged_counters)},"
                    f" stored {self.canary_stored_counter}"
                )
        found += [f"twistd: {line}" for line in self.sac_crashes]
        for name in ('sac_push_closed_total{reason="error"}',
                     'sac_push_sessions_total{outcome="error"}',
                     'sac_log_errors_total{level="error"}',
                     'sac_log_errors_total{level="critical"}'):  # fmt: skip
            if self.sac_metrics.get(name):
                found.append(f"twistd: {name} = {self.sac_metrics[name]:g}")
        return found

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"frames": self.frames}
        if self.direct:
            d = self.direct
            out["direct"] = {
                "frames": d.frames, "refused": d.refused, "accepted": d.accepted,
                "seconds": round(d.seconds, 1), "targets": len(d.per_target),
                "bugs": len(d.bugs),
            }  # fmt: skip
        if self.wire:
            w = self.wire
            out["wire"] = {
                "frames": w.frames, "push_frames": w.push_frames, "push_outer": w.push_outer,
                "push_inner": w.push_inner, "push_acknowledged": w.push_acknowledged,
                "poll_frames": w.poll_frames, "polls": w.polls, "polls_failed": w.polls_failed,
                "canary_pushes": w.canary_pushes, "canary_polls": w.canary_polls,
                "seconds": round(w.seconds, 1),
                "client_rss_mib": [round(k / 1024) for k in (w.rss_kib[:1] + w.rss_kib[-1:])],
            }  # fmt: skip
            out["mutations"] = dict(w.mutations.most_common())
        if self.sac_rss_kib:
            s = self.sac_rss_kib
            warm = s[min(len(s) - 1, max(1, len(s) // 10))]
            out["sac_rss_mib"] = {"warm": round(warm / 1024), "max": round(max(s) / 1024),
                                  "last": round(s[-1] / 1024)}  # fmt: skip
        out["sac_closed"] = {
            k.split('"')[1]: v for k, v in self.sac_metrics.items()
            if k.startswith("sac_push_closed_total") or k.startswith("sac_push_rejected_total")
        }  # fmt: skip
        out["problems"] = self.problems()
        return out


def parse_metrics(text: str) -> dict[str, float]:
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


def crash_lines(log_dir: Path) -> list[str]:
    found = []
    for path in sorted(log_dir.glob("sac.log*")):
        with path.open(errors="replace") as lines:
            found += [line.strip()[:2000] for line in lines if CRASH_LINES.search(line)]
    return found


async def fuzz_run(
    tmp: Path,
    store: Store,
    address: str,
    *,
    direct_frames: int,
    push_frames: int,
    poll_frames: int,
    seed: int = 1,
    log_level: str = "info",
    concurrency: int = 32,
) -> Report:
    """``store`` (open) and ``address`` (its [store] address) name the same empty store."""
    report = Report()
    if direct_frames:
        report.direct = fuzz_direct(direct_frames, seed=seed)
    if not (push_frames or poll_frames):
        return report
    fuzz = WireFuzz(store, 0, seed=seed)
    await fuzz.provision()
    config = write_config(
        tmp, address,
        push__idle_timeout="5",
        poll__enabled="no",
        log__file=str(tmp / "sac.log"),
        log__level=log_level,
    )  # fmt: skip
    sac = Twistd(Path(sys.executable).parent, config, tmp, ENV, log_file=tmp / "sac.log")
    try:
        ready = await sac.wait_for("SAC ready")
        fuzz.push_port = port(ready["push"])
        web = f"http://127.0.0.1:{port(ready['web'])}"
        pid = sac.process.pid
        report.wire = await fuzz.fuzz(
            push_frames, poll_frames, concurrency=concurrency,
            sample=lambda: report.sac_rss_kib.append(rss_kib(pid)),
        )  # fmt: skip
        answer = await treq.get(f"{web}/metrics")
        report.sac_metrics = parse_metrics(await answer.text())
        _, report.canary_stored_counter = await store.counters.last(fuzz.canary_push.ldn, 1)
        code = await sac.stop()
        if sac.process.returncode not in (0, -15):
            report.sac_crashes.append(f"twistd ended with status {code}")
    finally:
        sac.kill()
        await fuzz.stop()
    report.sac_crashes += crash_lines(tmp)
    if "SAC stopped cleanly" not in (tmp / "sac.log").read_text(errors="replace"):
        report.sac_crashes.append("no 'SAC stopped cleanly' in the log")
    return report


def save_corpus(report: Report, corpus: Path) -> list[Path]:
    """The decoder frames that found a bug, as regression cases of the corpus."""
    saved = []
    for target, data, error in report.direct.bugs if report.direct else []:
        name = f"{target}-{hashlib.sha1(data).hexdigest()[:12]}.json"
        path = corpus / name
        path.write_text(json.dumps({"target": target, "hex": data.hex(), "found": error}) + "\n")
        saved.append(path)
    return saved
