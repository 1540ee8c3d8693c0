"""The spool: order across restarts, handler failures, the size limit, group commit, a
failed write, acknowledged records surviving kill -9 (and garbage after the WAL's last
commit), a damaged database moved aside."""

from __future__ import annotations

import contextlib
import inspect
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger, formatEvent

from sac.errors import SacError
from sac.services import spool as spool_module
from sac.services.spool import ACK_EVERY, Spool, SpoolBusy, SpoolError, SpoolFull
from tests.conftest import ROOT


def payload(n: int) -> bytes:
    """Record n: its number first, then a length and content that vary with n."""
    return b"%08d:" % n + bytes([n % 251]) * (n * 37 % 1500)


def number(record: bytes) -> int:
    return int(record[:8])


def rows_on_disk(directory: Path) -> int:
    """The records in a closed spool's database."""
    with contextlib.closing(sqlite3.connect(directory / "spool.db")) as db:
        count: int = db.execute("SELECT count(*) FROM record").fetchone()[0]
        return count


class Logged:
    """A spool's log lines, as text."""

    def __init__(self, spool: Spool) -> None:
        self.lines: list[str] = []
        spool.log = Logger(observer=lambda event: self.lines.append(formatEvent(event)))


async def opened(directory: Path, **kw: Any) -> Spool:
    spool = Spool(directory, **kw)
    await spool.open()
    return spool


async def fill(spool: Spool, numbers: range) -> None:
    await gatherResults([spool.append(payload(n)) for n in numbers])


async def drain(spool: Spool, **kw: Any) -> list[int]:
    seen: list[int] = []

    async def handler(record: bytes) -> None:
        assert record == payload(number(record))
        seen.append(number(record))

    assert await spool.replay(handler, **kw) == len(seen)
    return seen


@pytest_twisted.ensureDeferred
async def test_records_replay_in_order_and_consumed_ones_go(tmp_path: Path) -> None:
    spool = await opened(tmp_path)
    await fill(spool, range(60))
    assert spool.depth == 60
    assert spool.bytes_held == sum(8 + len(payload(n)) for n in range(60))
    assert await drain(spool) == list(range(60))
    assert (spool.depth, spool.bytes_held) == (0, 0)
    await fill(spool, range(60, 70))
    assert await drain(spool) == list(range(60, 70))
    await spool.close()
    assert rows_on_disk(tmp_path) == 0
    again = await opened(tmp_path)
    assert again.depth == 0
    await fill(again, range(70, 75))
    assert await drain(again) == list(range(70, 75))
    await again.close()


@pytest_twisted.ensureDeferred
async def test_a_failing_handler_keeps_its_record_and_the_rest(tmp_path: Path) -> None:
    spool = await opened(tmp_path)
    await fill(spool, range(30))
    seen: list[int] = []

    async def handler(record: bytes) -> None:
        if number(record) == 12:
            raise SacError("the store is down")
        seen.append(number(record))

    with pytest.raises(SacError, match="the store is down"):
        await spool.replay(handler)
    assert seen == list(range(12))
    assert spool.depth == 18
    await spool.close()
    again = await opened(tmp_path)
    assert again.depth == 18
    assert await drain(again) == list(range(12, 30))
    await again.close()


@pytest_twisted.ensureDeferred
async def test_unconsumed_records_survive_close_and_reopen_in_order(tmp_path: Path) -> None:
    spool = await opened(tmp_path)
    await fill(spool, range(200))
    assert await drain(spool, limit=ACK_EVERY + 7) == list(range(ACK_EVERY + 7))
    await spool.close()
    again = await opened(tmp_path)
    assert again.depth == 200 - ACK_EVERY - 7
    assert again.bytes_held == sum(8 + len(payload(n)) for n in range(ACK_EVERY + 7, 200))
    await fill(again, range(200, 210))
    assert await drain(again) == list(range(ACK_EVERY + 7, 210))
    await again.close()


@pytest_twisted.ensureDeferred
async def test_close_waits_for_the_writes_under_way(tmp_path: Path) -> None:
    spool = await opened(tmp_path)
    appended = [spool.append(payload(n)) for n in range(100)]
    await spool.close()
    assert all(d.called for d in appended)
    await gatherResults(appended)
    with pytest.raises(SpoolError, match="not open"):
        await spool.append(b"late")
    again = await opened(tmp_path)
    assert await drain(again) == list(range(100))
    await again.close()


@pytest_twisted.ensureDeferred
async def test_one_process_at_a_time(tmp_path: Path) -> None:
    spool = await opened(tmp_path)
    with pytest.raises(SpoolError, match="open in another process"):
        await opened(tmp_path)
    await spool.close()
    await (await opened(tmp_path)).close()


@pytest_twisted.ensureDeferred
async def test_spool_full_at_max_bytes(tmp_path: Path) -> None:
    record = bytes(100)
    spool = await opened(tmp_path, max_bytes=3 * (8 + 100))
    await gatherResults([spool.append(record) for _ in range(3)])
    assert spool.bytes_held == 3 * 108
    with pytest.raises(SpoolFull):
        await spool.append(record)
    with pytest.raises(SpoolFull):
        await spool.append(b"")
    assert spool.depth == 3

    async def take(record: bytes) -> None:
        pass

    assert await spool.replay(take, limit=1) == 1
    await spool.append(record)
    assert (spool.depth, spool.bytes_held) == (3, 3 * 108)
    await spool.close()
    assert issubclass(SpoolFull, SacError)


@pytest_twisted.ensureDeferred
async def test_records_are_bytes_and_no_larger_than_max_record(tmp_path: Path) -> None:
    spool = await opened(tmp_path, max_record=100)
    for bad in ["text", bytearray(10), memoryview(b"x"), bytes(101)]:
        with pytest.raises(ValueError):
            await spool.append(bad)  # type: ignore[arg-type]
    await spool.append(bytes(100))
    await spool.append(b"")
    assert spool.depth == 2
    seen: list[bytes] = []

    async def keep(record: bytes) -> None:
        seen.append(record)

    await spool.replay(keep)
    assert seen == [bytes(100), b""]
    await spool.close()


@pytest_twisted.ensureDeferred
async def test_a_record_of_max_record_bytes_survives_a_restart_whole(tmp_path: Path) -> None:
    spool = await opened(tmp_path)
    large = bytes(range(256)) * (spool.max_record // 256)
    await gatherResults([spool.append(large), spool.append(payload(1))])
    await spool.close()
    again = await opened(tmp_path)
    assert again.bytes_held == 8 + len(large) + 8 + len(payload(1))
    seen: list[bytes] = []

    async def keep(record: bytes) -> None:
        seen.append(record)

    assert await again.replay(keep) == 2
    assert seen == [large, payload(1)]
    await again.close()


@pytest_twisted.ensureDeferred
async def test_appends_during_a_replay_come_after(tmp_path: Path) -> None:
    spool = await opened(tmp_path)
    await fill(spool, range(20))
    seen: list[int] = []
    late: list[Deferred[None]] = []

    async def handler(record: bytes) -> None:
        seen.append(number(record))
        if number(record) < 20:
            late.append(spool.append(payload(100 + number(record))))

    await spool.replay(handler)
    await gatherResults(late)
    seen += await drain(spool)
    assert seen == [*range(20), *range(100, 120)]
    await spool.close()


@pytest_twisted.ensureDeferred
async def test_a_second_replay_while_one_runs_is_refused(tmp_path: Path) -> None:
    spool = await opened(tmp_path)
    await fill(spool, range(3))
    entered: Deferred[None] = Deferred()
    gate: Deferred[None] = Deferred()

    async def slow(record: bytes) -> None:
        if not entered.called:
            entered.callback(None)
        await gate

    running = Deferred.fromCoroutine(spool.replay(slow))
    await entered
    with pytest.raises(SpoolBusy):
        await spool.replay(slow)
    closing = Deferred.fromCoroutine(spool.close())
    assert not closing.called  # waits for the record in hand
    gate.callback(None)
    assert await running == 1  # the spool closed after that record
    await closing
    again = await opened(tmp_path)
    assert await drain(again) == [1, 2]
    await again.close()


@pytest_twisted.ensureDeferred
async def test_group_commit_1000_concurrent_appends_take_few_transactions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = await opened(tmp_path)
    transactions: list[int] = []
    real_insert = spool_module.thd_insert

    def counting_insert(db: sqlite3.Connection, first: int, records: list[bytes]) -> None:
        transactions.append(len(records))
        real_insert(db, first, records)

    monkeypatch.setattr(spool_module, "thd_insert", counting_insert)
    await fill(spool, range(1000))
    assert transactions == [1, 999]  # the first record alone, then the 999 that waited
    monkeypatch.undo()
    assert await drain(spool) == list(range(1000))
    await spool.close()


async def query_only(spool: Spool, on: bool) -> None:
    """Make SQLite refuse the spool's writes, or take them again."""
    await spool._db_call(lambda db: db.execute(f"PRAGMA query_only = {int(on)}"))


@pytest_twisted.ensureDeferred
async def test_a_failed_write_fails_its_appends_and_the_spool_goes_on(tmp_path: Path) -> None:
    spool = await opened(tmp_path)
    log = Logged(spool)
    await fill(spool, range(5))
    await query_only(spool, True)
    failed = [spool.append(payload(n)) for n in range(5, 8)]  # 5 alone, then 6 and 7
    for appended in failed:
        with pytest.raises(SpoolError, match="readonly database"):
            await appended
    await query_only(spool, False)
    assert len(log.lines) == 2
    assert (spool.depth, spool.bytes_held) == (5, sum(8 + len(payload(n)) for n in range(5)))
    await fill(spool, range(8, 10))
    await spool.close()
    again = await opened(tmp_path)
    assert await drain(again) == [*range(5), 8, 9]
    await again.close()


# --- kill -9 -------------------------------------------------------------------------------

APPENDER = """
import sys
from collections import deque

from twisted.internet import task
from twisted.internet.defer import Deferred

from sac.services.spool import Spool

{payload}

async def main(reactor, directory, replaying):
    spool = Spool(directory)
    await spool.open()
    if replaying:
        Deferred.fromCoroutine(replay(reactor, spool))
    window = deque()
    n = 0
    while True:
        while len(window) < 64:
            window.append((n, spool.append(payload(n))))
            n += 1
        m, appended = window.popleft()
        await appended
        print("acked", m, flush=True)

async def replay(reactor, spool):
    async def handler(record):
        print("handled", int(record[:8]), flush=True)
    while True:
        if not await spool.replay(handler):
            await task.deferLater(reactor, 0.001)

task.react(lambda reactor: Deferred.fromCoroutine(main(reactor, sys.argv[1], sys.argv[2] == "1")))
"""


def run_and_kill(directory: Path, *, replaying: bool, acked_before_kill: int) -> dict[str, int]:
    """Run the appender, kill -9 it once enough records were acknowledged: the highest
    record number acknowledged, and handled."""
    script = APPENDER.format(payload=inspect.getsource(payload))
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(directory), "1" if replaying else "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    last = {"acked": -1, "handled": -1}

    def read(line: str) -> None:
        if line.endswith("\n"):  # not a line the kill cut short
            what, n = line.split()
            last[what] = int(n)

    try:
        for line in child.stdout:  # type: ignore[union-attr]
            read(line)
            if last["acked"] >= acked_before_kill and (not replaying or last["handled"] >= 0):
                os.kill(child.pid, signal.SIGKILL)
                break
        for line in child.stdout:  # type: ignore[union-attr]
            read(line)  # printed before the kill, still in the pipe
    finally:
        child.kill()
        child.wait(timeout=30)
    assert last["acked"] >= acked_before_kill, child.stderr.read()  # type: ignore[union-attr]
    assert child.returncode == -signal.SIGKILL
    return last


@pytest.mark.parametrize("acked_before_kill", [700, 4000])
@pytest_twisted.ensureDeferred
async def test_acknowledged_appends_survive_sigkill(tmp_path: Path, acked_before_kill: int) -> None:
    last = run_and_kill(tmp_path, replaying=False, acked_before_kill=acked_before_kill)
    spool = await opened(tmp_path)
    found = await drain(spool)
    # every acknowledged record, in order, once; maybe some written but not yet acknowledged
    assert found == list(range(len(found)))
    assert len(found) > last["acked"]
    await spool.close()


@pytest_twisted.ensureDeferred
async def test_acknowledged_appends_survive_sigkill_during_a_replay(tmp_path: Path) -> None:
    last = run_and_kill(tmp_path, replaying=True, acked_before_kill=3000)
    spool = await opened(tmp_path)
    found = await drain(spool)
    first = found[0] if found else last["acked"] + 1
    # a record whose handler was never called is still there; a handled one may be again
    assert first <= last["handled"] + 1
    assert found == list(range(first, first + len(found)))
    assert first + len(found) > last["acked"]
    await spool.close()


@pytest.mark.parametrize(
    "tail", [b"\x00\x00\x01\x00garbage", bytes(4096)], ids=["garbage", "zeros"]
)
@pytest_twisted.ensureDeferred
async def test_garbage_after_the_last_commit_of_the_wal_is_ignored(
    tmp_path: Path, tail: bytes
) -> None:
    """A torn tail: what a write cut short leaves after the WAL's last commit.  Every
    acknowledged record is still there, and the spool goes on."""
    last = run_and_kill(tmp_path, replaying=False, acked_before_kill=700)
    wal = tmp_path / "spool.db-wal"
    assert wal.stat().st_size > 0  # the crash left it: the records are in it
    with wal.open("ab") as file:
        file.write(tail)
    spool = await opened(tmp_path)
    await spool.append(payload(10**6))
    found = await drain(spool)
    assert found[:-1] == list(range(len(found) - 1)) and found[-1] == 10**6
    assert len(found) - 1 > last["acked"]
    await spool.close()


@pytest_twisted.ensureDeferred
async def test_a_damaged_database_is_moved_aside_with_an_error(tmp_path: Path) -> None:
    """Damage, not a crash: the spool says so, keeps the file for ``.recover`` and starts
    a new one, so that the SAC still starts."""
    spool = await opened(tmp_path)
    await fill(spool, range(40))
    await spool.close()
    database = tmp_path / "spool.db"
    data = bytearray(database.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    data[2 * page : 3 * page] = b"\xff" * page  # the table's first page (after the ptrmap)
    database.write_bytes(bytes(data))
    again = Spool(tmp_path)
    log = Logged(again)
    await again.open()
    (damaged,) = tmp_path.glob("spool-damaged-*.db")
    assert damaged.read_bytes()[page:] == data[page:]  # (SQLite may have touched its header)
    assert len(log.lines) == 1 and f"moved to {damaged.name}" in log.lines[0]
    assert again.depth == 0
    await fill(again, range(40, 45))
    assert await drain(again) == list(range(40, 45))
    await again.close()
