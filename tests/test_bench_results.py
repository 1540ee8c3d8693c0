"""benchmarks/results.py: the results a benchmark keeps, and `make bench-check`'s comparison."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "results.py"


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_results", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


results = _module()


def write(folder: Path, utc: str, ratio: float, cores: int = 2, shape: str = "both") -> None:
    result = {
        "benchmark": "push",
        "utc": utc,
        "options": {"shape": shape, "meters": 2000},
        "figures": {"peer": {"rate": 6000.0}},
        "ratios": {"cold rate/peer": ratio, "hot rate/peer": 0.2},
        "cpu_count": cores,
    }
    (folder / f"push-{utc}.json").write_text(json.dumps(result))


def check(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "check", "--folder", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_fall_of_25_percent_is_named_and_fails(tmp_path: Path) -> None:
    write(tmp_path, "2026-12-01T10:00:00+00:00", 0.100)
    write(tmp_path, "2026-12-02T10:00:00+00:00", 0.075)
    done = check(tmp_path)
    assert done.returncode == 1
    assert "push cold rate/peer: 0.100 -> 0.075 (-25%)" in done.stdout
    assert "hot rate/peer" not in done.stdout.split("fell by more than")[1]


def test_a_fall_of_10_percent_passes(tmp_path: Path) -> None:
    write(tmp_path, "2026-12-01T10:00:00+00:00", 0.100)
    write(tmp_path, "2026-12-02T10:00:00+00:00", 0.090)
    done = check(tmp_path)
    assert done.returncode == 0, done.stdout
    assert "-10%" in done.stdout
    assert "FELL" not in done.stdout


def test_only_the_newest_is_compared_with_the_one_before(tmp_path: Path) -> None:
    write(tmp_path, "2026-12-01T10:00:00+00:00", 0.200)  # older: not compared
    write(tmp_path, "2026-12-02T10:00:00+00:00", 0.100)
    write(tmp_path, "2026-12-03T10:00:00+00:00", 0.095)
    assert check(tmp_path).returncode == 0


def test_another_shape_is_not_compared(tmp_path: Path) -> None:
    write(tmp_path, "2026-12-01T10:00:00+00:00", 0.100, shape="cold")
    write(tmp_path, "2026-12-02T10:00:00+00:00", 0.050, shape="both")
    done = check(tmp_path)
    assert done.returncode == 0, done.stdout
    assert done.stdout.count("one run, nothing to compare with") == 2


def test_different_core_counts_are_said(tmp_path: Path) -> None:
    write(tmp_path, "2026-12-01T10:00:00+00:00", 0.100, cores=2)
    write(tmp_path, "2026-12-02T10:00:00+00:00", 0.100, cores=8)
    done = check(tmp_path)
    assert "2 cores then, 8 now" in done.stdout
    assert done.returncode == 0


def test_record_writes_what_the_check_reads(tmp_path: Path) -> None:
    first = results.record(
        "web", {"backend": "sqlite"}, {"p95": 0.01}, {"p95 peer/sac": 0.5}, tmp_path
    )
    saved = json.loads(first.read_text())
    assert saved["cpu_count"] and saved["python"] and saved["argv"]
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout.strip()
    assert saved["commit"] in (head, f"{head}-dirty")
    saved["utc"] = "2999-01-01T00:00:00+00:00"  # after the first
    saved["ratios"]["p95 peer/sac"] = 0.3
    (tmp_path / "web-later.json").write_text(json.dumps(saved))
    lines, fell = results.compare(tmp_path)
    assert fell == ["web p95 peer/sac: 0.500 -> 0.300 (-40%)"]
    assert any("FELL" in line for line in lines)


def test_a_ratio_without_a_figure_before_is_shown_not_compared(tmp_path: Path) -> None:
    write(tmp_path, "2026-12-01T10:00:00+00:00", 0.0)
    write(tmp_path, "2026-12-02T10:00:00+00:00", 0.1)
    done = check(tmp_path)
    assert done.returncode == 0
    assert "cold rate/peer                      -    0.100" in done.stdout
