"""The pieces of ``benchmarks/bench_push.py`` around its measures: the throwaway database with
the checks it makes, the helper processes (``push_sac.py``) and what /proc says of them."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench_store import Postgres as BenchDatabase

HELPER = Path(__file__).with_name("push_sac.py")
ROOT = HELPER.parent.parent
TICK = os.sysconf("SC_CLK_TCK")
INDEX = "7.0.13.2.0.255"  # the frame's volume index, captured at the frame's time

# --- PostgreSQL -----------------------------------------------------------------------------


class Postgres(BenchDatabase):
    """bench_store's throwaway database, with the checks this benchmark makes."""

    def __init__(self) -> None:
        super().__init__()
        self.conn = self.connect()
        self.conn.autocommit = True

    def one(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        with self.conn.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchone()[0]

    def lost(self, acked: Path) -> tuple[int, int]:
        """(sessions acknowledged, those whose frame's index reading is not in the store)."""
        with self.conn.cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS acked")
            cursor.execute("CREATE TEMP TABLE acked (ldn TEXT, t BIGINT)")
            with acked.open() as f:
                cursor.copy_from(f, "acked", columns=("ldn", "t"))
            cursor.execute("SELECT count(*) FROM acked")
            total = cursor.fetchone()[0]
            cursor.execute(
                "SELECT count(*) FROM acked a WHERE NOT EXISTS (SELECT 1 FROM readings r"
                " JOIN meters m ON m.id = r.meter_id WHERE m.ldn = a.ldn AND r.obis = %s"
                " AND r.attribute = 2 AND r.captured = to_timestamp(a.t))",
                (INDEX,),
            )
            return total, cursor.fetchone()[0]

    def drop(self) -> None:
        self.conn.close()
        super().drop()


# --- the processes --------------------------------------------------------------------------


class ChildFailed(RuntimeError):
    pass


class Child:
    """A helper process answering JSON lines; its first line says it is ready."""

    def __init__(self, name: str, args: list[str], folder: Path, timeout: float = 300) -> None:
        self.name = name
        self.err = folder / f"{name}.stderr"
        with self.err.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(HELPER), *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=ROOT,
            )
        self.pid = self.proc.pid
        self._buffer = b""
        self.ready: dict[str, Any] = {}
        self._timeout = timeout

    def wait_ready(self) -> dict[str, Any]:
        self.ready = self.read(self._timeout)
        return self.ready

    def read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChildFailed(f"{self.name}: no answer within {timeout:g} s")
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    tail = self.err.read_text()[-2000:]
                    raise ChildFailed(f"{self.name} ended:\n{tail}")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        answer = json.loads(line)
        if "error" in answer:
            raise ChildFailed(f"{self.name}: {answer['error']}")
        return answer

    def ask(self, timeout: float = 600, **command: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command).encode() + b"\n")
        self.proc.stdin.flush()
        return self.read(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (/proc/<pid>/stat, fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) in bytes."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line[:5]] = int(line.split()[1]) * 1024
    return out


def postgres_cpu() -> float:
    """CPU seconds of every process named postgres (server, backends, WAL writer...)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                if f.read().strip() != "postgres":
                    continue
            total += cpu_seconds(int(entry))
        except OSError:
            continue
    return total


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


def mib(size: float) -> str:
    return f"{size / 2**20:6.1f} MiB"
