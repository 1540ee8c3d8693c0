"""Benchmark results that stay: each run writes its figures to ``benchmarks/results/``, and
``make bench-check`` (``python benchmarks/results.py check``) compares the newest run of each
benchmark with the one before it of the same options.

A result is one JSON file, ``<benchmark>-<UTC time>.json``::

    {"benchmark": "push", "utc": "...", "options": {...}, "figures": {...},
     "ratios": {"cold/peer": 0.08, ...}, "cpu_count": 2, "python": "3.13.0",
     "commit": "0da630c...[-dirty]", "argv": [...]}

The ratios (a figure over its peer's, measured in the same run) are what is compared: the
machine's load moves both sides, its speed cancels out.  A ratio that fell by more than
``FALL`` (20 %) is named and the check fails; a run on another core count than the one it is
compared with is said, as the ratios need not carry over.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
FALL = 0.20


def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], capture_output=True, text=True, cwd=RESULTS.parent, check=False
        )
    except OSError:
        return ""
    return done.stdout.strip()


def _commit() -> str:
    """HEAD, with ``-dirty`` when tracked files differ from it (the run measured those)."""
    head = _git("rev-parse", "HEAD")
    dirty = head and _git("status", "--porcelain", "--untracked-files=no")
    return f"{head}-dirty" if dirty else head


def record(
    benchmark: str,
    options: dict[str, Any],
    figures: dict[str, Any],
    ratios: dict[str, float],
    folder: Path | None = None,
) -> Path:
    """Write one run's result; its path.  ``options``: what makes two runs comparable (the
    shape measured, not the run's length); ``ratios``: higher is better."""
    folder = folder or RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    result = {
        "benchmark": benchmark,
        "utc": now.isoformat(timespec="seconds"),
        "options": options,
        "figures": figures,
        "ratios": ratios,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "commit": _commit(),
        "argv": sys.argv,
    }
    path = folder / f"{benchmark}-{now:%Y%m%dT%H%M%S%fZ}.json"
    path.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"  result    {path.relative_to(folder.parent) if folder == RESULTS else path}")
    return path


def _shape(result: dict[str, Any]) -> str:
    return f"{result['benchmark']} {json.dumps(result.get('options', {}), sort_keys=True)}"


def compare(folder: Path | None = None, fall: float = FALL) -> tuple[list[str], list[str]]:
    """(the table's lines, the ratios that fell by more than ``fall``), newest run of each
    benchmark and options shape against the one before it."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for path in sorted((folder or RESULTS).glob("*.json")):
        result = json.loads(path.read_text())
        runs.setdefault(_shape(result), []).append(result)
    lines = [f"{'benchmark':12} {'ratio':28} {'before':>8} {'now':>8} {'change':>8}"]
    fell = []
    for shape, found in sorted(runs.items()):
        found.sort(key=lambda r: r["utc"])
        if len(found) < 2:
            lines.append(f"{shape[:60]}: one run, nothing to compare with")
            continue
        before, now = found[-2], found[-1]
        name = now["benchmark"]
        if before.get("cpu_count") != now.get("cpu_count"):
            lines.append(
                f"{name}: {before.get('cpu_count')} cores then, {now.get('cpu_count')} now:"
                " the ratios need not carry over"
            )
        for ratio, value in sorted(now["ratios"].items()):
            old = before["ratios"].get(ratio)
            if not old:
                lines.append(f"{name:12} {ratio:28} {'-':>8} {value:8.3f}")
                continue
            change = value / old - 1
            mark = "  FELL" if change < -fall else ""
            lines.append(f"{name:12} {ratio:28} {old:8.3f} {value:8.3f} {change:+7.0%}{mark}")
            if mark:
                fell.append(f"{name} {ratio}: {old:.3f} -> {value:.3f} ({change:+.0%})")
    return lines, fell


def check(folder: Path | None = None, fall: float = FALL) -> int:
    lines, fell = compare(folder, fall)
    print("\n".join(lines))
    if fell:
        print(f"fell by more than {fall:.0%}: " + "; ".join(fell))
        return 1
    print(f"no ratio fell by more than {fall:.0%}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="compare the newest benchmark results")
    parser.add_argument("command", choices=("check",))
    parser.add_argument("--folder", type=Path, default=RESULTS)
    parser.add_argument("--fall", type=float, default=FALL, help="the fall that fails")
    args = parser.parse_args()
    sys.exit(check(args.folder, args.fall))
