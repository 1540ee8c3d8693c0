"""The benchmark's peer: the spool sac had before issue 20 (sac/services/spool.py at
755fb29, unchanged but for this paragraph), a home-made write-ahead log.  It lost to the
SQLite spool, as durable, as fast where the push path can feed it and 60% of its size
(see benchmarks/bench_spool.py and the docstring of sac/services/spool.py); it is kept whole
(over the 600 lines a module may have) so that the figures stay reproducible.

A durable spool on local disk for the meter frames the store cannot take in time.

When the store fails or falls behind, the push listener appends each frame it received to
the spool, and answers the meter once :meth:`Spool.append` has fired: by then the frame is
written and fsync'd.  When the store is back, :meth:`Spool.replay` hands the frames to a
handler, oldest first, and forgets each one only after its handler succeeded.  The spool
never looks inside a frame.

Appends are committed in groups: while one write and fsync runs in a thread, the appends
that arrive wait, and the next single write and fsync takes them all.

The spool directory holds:

- ``lock``: locked (``flock``) while a process has the spool open;
- ``<20-digit sequence number>.seg``: the segments, oldest first.  Each starts with the 8
  bytes ``SACSPL1\\n``, then records: a 4-byte big-endian payload length, the CRC32 (zlib)
  of those 4 bytes followed by the payload, 4 bytes big-endian, then the payload;
- ``cursor``: two 64-byte slots, each ``SACCUR1\\n``, then a generation, a segment and an
  offset (8 bytes big-endian each) and the CRC32 of the 32 bytes before it.  The valid slot
  with the higher generation names the first record not yet consumed; a save writes the
  other slot, so a save cut short leaves the one before it.

What survives a crash (kill -9 or a power cut):

- Only the newest segment is ever written, and a process that opens the spool starts a new
  one, so only the end of the newest segment can hold a record cut short.  Opening finds it
  by its CRC, cuts it off and logs one line: that record was never acknowledged.
- An older segment was fsync'd in full, so a bad record there is damage, not a crash.  Its
  length cannot be trusted, so the rest of that segment is skipped, with an error logged;
  the later segments are read as usual.
- The cursor is saved every :data:`ACK_EVERY` records consumed, at the end of each segment
  and when a replay ends, and a segment is deleted only after the cursor has moved past it.
  A crash in between replays at most :data:`ACK_EVERY` records again: at least once,
  never lost.
"""

from __future__ import annotations

import fcntl
import os
import re
import struct
import zlib
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from sac.errors import SacError

__all__ = ["ACK_EVERY", "Spool", "SpoolBusy", "SpoolError", "SpoolFull"]

SEGMENT_MAGIC = b"SACSPL1\n"
CURSOR_MAGIC = b"SACCUR1\n"
RECORD = struct.Struct(">II")  # payload length, CRC32 of the length's 4 bytes and the payload
SLOT = struct.Struct(">8sQQQI")  # magic, generation, segment, offset, CRC32 of the 32 before
SLOT_SIZE = 64
SEGMENT_NAME = re.compile(r"(\d{20})\.seg")

#: records consumed between two saves of the cursor
ACK_EVERY = 64
#: what one read of a replay takes at most: records and payload bytes
READ_RECORDS = 256
READ_BYTES = 1 << 20


class SpoolError(SacError):
    """The spool cannot do what it was asked: a disk error, a closed or busy spool."""


class SpoolFull(SpoolError):
    """An append would take the spool over its ``max_bytes``."""


class SpoolBusy(SpoolError):
    """A replay was asked for while another one runs."""


# --- the format ----------------------------------------------------------------------------


def _frame(payload: bytes) -> bytes:
    length = len(payload).to_bytes(4, "big")
    return length + zlib.crc32(payload, zlib.crc32(length)).to_bytes(4, "big") + payload


def _record_end(data: bytes | memoryview, offset: int) -> int | None:
    """Where the record at ``offset`` of ``data`` ends, or None if it is not a whole, valid
    record."""
    head = data[offset : offset + RECORD.size]
    if len(head) < RECORD.size:
        return None
    length, crc = RECORD.unpack(head)
    end = offset + RECORD.size + length
    if end > len(data):
        return None
    payload = data[offset + RECORD.size : end]
    return end if zlib.crc32(payload, zlib.crc32(head[:4])) == crc else None


@dataclass
class _Scan:
    """One segment read in full when the spool opens."""

    end: int  # where its valid records end (0: no valid header)
    start: int  # the first record at or after the cursor's offset
    records: int  # valid records from start
    nbytes: int  # their size, headers included


def _scan(data: bytes, skip: int) -> _Scan:
    if not data.startswith(SEGMENT_MAGIC):
        return _Scan(0, 0, 0, 0)
    view = memoryview(data)
    offset = start = len(SEGMENT_MAGIC)
    records = nbytes = 0
    while (end := _record_end(view, offset)) is not None:
        if offset < skip:
            start = end
        else:
            records += 1
            nbytes += end - offset
        offset = end
    return _Scan(offset, start, records, nbytes)


def _slot(generation: int, segment: int, offset: int) -> bytes:
    body = SLOT.pack(CURSOR_MAGIC, generation, segment, offset, 0)[:-4]
    return (body + zlib.crc32(body).to_bytes(4, "big")).ljust(SLOT_SIZE, b"\0")


def _read_slot(data: bytes) -> tuple[int, int, int] | None:
    if len(data) < SLOT.size:
        return None
    magic, generation, segment, offset, crc = SLOT.unpack(data[: SLOT.size])
    if magic != CURSOR_MAGIC or zlib.crc32(data[: SLOT.size - 4]) != crc:
        return None
    return generation, segment, offset


def _segment_path(directory: Path, seq: int) -> Path:
    return directory / f"{seq:020d}.seg"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- the thread side -----------------------------------------------------------------------


@dataclass
class _Segment:
    """A segment as the reactor side knows it: durable up to ``end``."""

    seq: int
    path: Path
    end: int
    records: int = 0  # not yet consumed
    nbytes: int = 0


@dataclass
class _Opened:
    lock_fd: int
    cursor_fd: int
    generation: int
    cursor: tuple[int, int]
    segments: list[_Segment]
    next_seq: int
    notes: list[tuple[str, str]] = field(default_factory=list)  # (level, message)


def thd_open(directory: Path) -> _Opened:
    """Lock the spool, read the cursor, check every segment, cut a torn tail."""
    if not directory.is_dir():
        directory.mkdir(mode=0o700, parents=True)
        _fsync_dir(directory.parent)
    lock_fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock_fd)
        raise SpoolError(f"spool {directory}: open in another process") from None
    cursor_fd = -1
    try:
        cursor_path = directory / "cursor"
        fresh = not cursor_path.exists()
        cursor_fd = os.open(cursor_path, os.O_RDWR | os.O_CREAT, 0o600)
        if fresh:
            os.fsync(cursor_fd)
            _fsync_dir(directory)
        return _thd_read_state(directory, lock_fd, cursor_fd)
    except BaseException:
        if cursor_fd >= 0:
            os.close(cursor_fd)
        os.close(lock_fd)
        raise


def _thd_read_state(directory: Path, lock_fd: int, cursor_fd: int) -> _Opened:
    slots = os.pread(cursor_fd, 2 * SLOT_SIZE, 0)
    saved = [s for s in (_read_slot(slots[:SLOT_SIZE]), _read_slot(slots[SLOT_SIZE:])) if s]
    generation, cur_seq, cur_offset = max(saved, default=(0, 0, 0))
    found = sorted(
        (int(m.group(1)), directory / name)
        for name in os.listdir(directory)
        if (m := SEGMENT_NAME.fullmatch(name))
    )
    opened = _Opened(lock_fd, cursor_fd, generation, (cur_seq, cur_offset), [], 1)
    opened.next_seq = max([cur_seq, *(seq for seq, _ in found)]) + 1
    for seq, path in found:
        if seq < cur_seq:  # consumed, its deletion lost in a crash
            path.unlink()
            continue
        data = path.read_bytes()
        scan = _scan(data, cur_offset if seq == cur_seq else 0)
        if seq == cur_seq:
            opened.cursor = (seq, scan.start)
            if scan.records == 0 and scan.end == len(data):  # consumed, and never written again
                path.unlink()
                continue
        if scan.end < len(data) and seq == found[-1][0]:
            _thd_cut_torn_tail(opened, path, scan.end, len(data))
            if scan.end == 0:
                continue
        elif scan.end < len(data):
            opened.notes.append(
                (
                    "error",
                    f"spool {directory}: bad record at offset {scan.end} of {path.name}: "
                    f"the {len(data) - scan.end} bytes after it are skipped",
                )
            )
        opened.segments.append(_Segment(seq, path, scan.end, scan.records, scan.nbytes))
    return opened


def _thd_cut_torn_tail(opened: _Opened, path: Path, end: int, size: int) -> None:
    if end == 0:
        path.unlink()
    else:
        with open(path, "r+b") as file:
            file.truncate(end)
            os.fsync(file.fileno())
    opened.notes.append(
        (
            "warn",
            f"spool {path.parent}: dropped a torn tail of {size - end} bytes at the end of "
            f"{path.name} (a write cut short by a crash, never acknowledged)",
        )
    )


class _WriteFailed(Exception):
    """A batch that failed after ``done`` of its segment writes were made durable."""

    def __init__(self, done: list[tuple[int, int, int, int]], error: OSError) -> None:
        super().__init__(str(error))
        self.done = done
        self.error = error


class _SegmentWriter:
    """The thread side of appends: the newest segment, written and fsync'd a batch at a time.

    Only one call runs at a time (the spool's group commit sees to it).
    """

    def __init__(self, directory: Path, next_seq: int, segment_bytes: int) -> None:
        self.directory = directory
        self.next_seq = next_seq
        self.segment_bytes = segment_bytes
        self.fd: int | None = None
        self.seq = 0
        self.size = 0  # durable
        self.new = False  # its directory entry is not fsync'd yet

    def thd_write(self, payloads: list[bytes]) -> list[tuple[int, int, int, int]]:
        """Append the payloads in order and fsync; (segment, end, records, bytes) for each
        segment written."""
        done: list[tuple[int, int, int, int]] = []
        chunk: list[bytes] = []
        held = 0
        try:
            for payload in payloads:
                framed = _frame(payload)
                has_records = self.size + held > len(SEGMENT_MAGIC)
                if self.fd is None or (
                    has_records and self.size + held + len(framed) > self.segment_bytes
                ):
                    if chunk:
                        done.append(self._flush(chunk))
                    self._roll()
                    chunk, held = [SEGMENT_MAGIC], len(SEGMENT_MAGIC)
                chunk.append(framed)
                held += len(framed)
            if chunk:
                done.append(self._flush(chunk))
        except OSError as exc:
            self._abandon()
            raise _WriteFailed(done, exc) from None
        return done

    def _roll(self) -> None:
        self.thd_close()
        self.seq, self.next_seq = self.next_seq, self.next_seq + 1
        path = _segment_path(self.directory, self.seq)
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.size = 0
        self.new = True

    def _flush(self, chunk: list[bytes]) -> tuple[int, int, int, int]:
        assert self.fd is not None
        data = b"".join(chunk)
        written = 0
        while written < len(data):
            written += os.pwrite(self.fd, memoryview(data)[written:], self.size + written)
        os.fsync(self.fd)
        if self.new:
            _fsync_dir(self.directory)
            self.new = False
        start, self.size = self.size, self.size + len(data)
        headers = len(SEGMENT_MAGIC) if chunk[0] is SEGMENT_MAGIC else 0
        records = len(chunk) - (1 if headers else 0)
        return self.seq, self.size, records, self.size - start - headers

    def _abandon(self) -> None:
        """After an error: cut what the failed write left, and start a new segment next."""
        if self.fd is None:
            return
        with suppress(OSError):
            os.ftruncate(self.fd, self.size)
        if self.size == 0:
            with suppress(OSError):
                _segment_path(self.directory, self.seq).unlink()
        self.thd_close()

    def thd_close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)


def thd_read(path: Path, offset: int, end: int) -> tuple[list[tuple[bytes, int]], int | None]:
    """The records of a segment from ``offset``, up to ``end`` and one batch at most: each
    with the offset after it; and the offset of a bad record if one stopped the batch."""
    records: list[tuple[bytes, int]] = []
    taken = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        while offset < end and len(records) < READ_RECORDS and taken < READ_BYTES:
            head = os.pread(fd, RECORD.size, offset)
            length = RECORD.unpack(head)[0] if len(head) == RECORD.size else end
            if offset + RECORD.size + length > end:
                return records, offset
            data = head + os.pread(fd, length, offset + RECORD.size)
            after = _record_end(data, 0)
            if after is None:
                return records, offset
            offset += after
            records.append((data[RECORD.size :], offset))
            taken += length
    finally:
        os.close(fd)
    return records, None


def thd_save_cursor(
    fd: int, generation: int, segment: int, offset: int, doomed: list[Path]
) -> None:
    """Write the cursor to the slot of its generation, fsync, then delete the segments it
    has passed."""
    os.pwrite(fd, _slot(generation, segment, offset), (generation % 2) * SLOT_SIZE)
    os.fsync(fd)
    for path in doomed:
        path.unlink(missing_ok=True)


# --- the reactor side ----------------------------------------------------------------------


class Spool:
    """Frames on local disk, durable once :meth:`append` fired, replayed oldest first.

    ``segment_bytes`` is the size at which a new segment starts (a larger record gets one of
    its own), ``max_bytes`` the most the records not yet consumed may take, headers included
    (the consumed start of the oldest segment is on disk until its end is consumed too), and
    ``max_record`` the largest payload.  One process at a time may open a spool directory.
    """

    log = Logger()

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        reactor: Any = None,
        segment_bytes: int = 16 * 2**20,
        max_bytes: int = 2 * 2**30,
        max_record: int = 1 << 20,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        if not 0 <= max_record < 2**32 or segment_bytes <= 0 or max_bytes <= 0:
            raise ValueError("spool sizes must be positive, and a record under 4 GiB")
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes
        self.max_record = max_record
        self._reactor = reactor
        self._state = "new"  # new, opening, open, closing, closed
        self._segments: dict[int, _Segment] = {}
        self._writer: _SegmentWriter | None = None
        self._pending: list[tuple[bytes, Deferred[None]]] = []
        self._writing = False
        self._depth = 0
        self._bytes_held = 0
        self._cursor = (0, 0)
        self._cursor_fd = -1
        self._lock_fd = -1
        self._generation = 0
        self._unsaved = 0  # records consumed since the cursor was last saved
        self._doomed: list[Path] = []  # passed segments, deleted at the next save
        self._replaying = False
        self._waiters: list[Deferred[None]] = []  # close(), waiting for writes and replay

    @property
    def depth(self) -> int:
        """Records appended (durable or not yet) and not yet consumed."""
        return self._depth

    @property
    def bytes_held(self) -> int:
        """The size of those records, headers included."""
        return self._bytes_held

    async def open(self) -> None:
        """Create the directory if need be, check the segments and cut a torn tail."""
        if self._state != "new":
            raise SpoolError(f"spool {self.directory}: already opened")
        self._state = "opening"
        try:
            opened = await self._in_thread(thd_open, self.directory)
        except BaseException:
            self._state = "new"
            raise
        for level, message in opened.notes:
            getattr(self.log, level)("{message}", message=message)
        self._lock_fd, self._cursor_fd = opened.lock_fd, opened.cursor_fd
        self._generation, self._cursor = opened.generation, opened.cursor
        self._segments = {s.seq: s for s in opened.segments}
        self._depth = sum(s.records for s in opened.segments)
        self._bytes_held = sum(s.nbytes for s in opened.segments)
        self._writer = _SegmentWriter(self.directory, opened.next_seq, self.segment_bytes)
        self._state = "open"

    def append(self, record: bytes) -> Deferred[None]:
        """Add a record; fires once it is on disk and fsync'd.

        Fails with :class:`ValueError` for a record that is not ``bytes`` or is larger than
        ``max_record``, :class:`SpoolFull` when it would take the spool over ``max_bytes``,
        and :class:`SpoolError` when the spool is not open or the disk failed.
        """
        if type(record) is not bytes:
            return fail(ValueError(f"a spool record is bytes, not {type(record).__name__}"))
        if len(record) > self.max_record:
            return fail(ValueError(f"a spool record is at most {self.max_record} bytes"))
        if self._state != "open":
            return fail(SpoolError(f"spool {self.directory}: not open ({self._state})"))
        size = RECORD.size + len(record)
        if self._bytes_held + size > self.max_bytes:
            return fail(SpoolFull(f"spool {self.directory}: full ({self._bytes_held} bytes)"))
        self._depth += 1
        self._bytes_held += size
        done: Deferred[None] = Deferred()
        self._pending.append((record, done))
        if not self._writing:
            self._write_pending()
        return done

    def _write_pending(self) -> None:
        """Write every pending record with one write and one fsync, in a thread."""
        assert self._writer is not None
        batch, self._pending = self._pending, []
        self._writing = True
        written = deferToThreadPool(
            self._reactor,
            self._reactor.getThreadPool(),
            self._writer.thd_write,
            [record for record, _ in batch],
        )
        written.addBoth(self._written, batch)

    def _written(self, result: Any, batch: list[tuple[bytes, Deferred[None]]]) -> None:
        error: Failure | None = None
        if isinstance(result, Failure):
            error = result
            result = result.value.done if isinstance(result.value, _WriteFailed) else []
        durable = 0
        for seq, end, records, nbytes in result:
            segment = self._segments.setdefault(
                seq, _Segment(seq, _segment_path(self.directory, seq), end)
            )
            segment.end = end
            segment.records += records
            segment.nbytes += nbytes
            durable += records
        self._writing = False
        if self._pending:
            self._write_pending()
        else:
            self._wake()
        if error is not None:
            error = self._spool_failure(error)
            for record, _ in batch[durable:]:
                self._depth -= 1
                self._bytes_held -= RECORD.size + len(record)
        for i, (_, done) in enumerate(batch):
            if i < durable:
                done.callback(None)
            else:
                done.errback(error)

    def _spool_failure(self, failure: Failure) -> Failure:
        if isinstance(failure.value, _WriteFailed):
            error = SpoolError(f"spool {self.directory}: {failure.value.error}")
            self.log.error("{message}", message=str(error))
            return Failure(error)
        return failure

    async def replay(
        self, handler: Callable[[bytes], Awaitable[Any]], *, limit: int | None = None
    ) -> int:
        """Hand the records to ``handler`` oldest first, one at a time, and forget each one
        its handler succeeded with; the number forgotten.

        Stops when no durable record is left (records appended meanwhile are replayed too,
        once durable), after ``limit`` records, or when the spool closes.  When the handler
        raises, that record and the ones after it stay, and the error goes on.  A replay
        asked for while one runs raises :class:`SpoolBusy` at once.
        """
        if self._state != "open":
            raise SpoolError(f"spool {self.directory}: not open ({self._state})")
        if self._replaying:
            raise SpoolBusy(f"spool {self.directory}: a replay is running")
        self._replaying = True
        consumed = 0
        try:
            while (limit is None or consumed < limit) and self._state == "open":
                batch = await self._next_records()
                if not batch:
                    break
                for payload, position in batch:
                    if (limit is not None and consumed >= limit) or self._state != "open":
                        break
                    await handler(payload)
                    self._consume(position, len(payload))
                    consumed += 1
                    if self._unsaved >= ACK_EVERY:
                        await self._save_cursor()
        except BaseException:
            await self._save_cursor_quietly()
            raise
        else:
            if self._unsaved or self._doomed:
                await self._save_cursor()
        finally:
            self._replaying = False
            self._wake()
        return consumed

    async def _next_records(self) -> list[tuple[bytes, tuple[int, int]]]:
        """The next durable records after the cursor, each with the cursor after it; none
        when the replay has caught up."""
        while True:
            seq, offset = self._cursor
            segment = self._segments.get(seq)
            later = [s for s in self._segments if s > seq]
            if segment is not None and offset < segment.end:
                records, bad = await self._in_thread(thd_read, segment.path, offset, segment.end)
                if bad is not None:
                    self.log.error(
                        "spool {directory}: bad record at offset {offset} of {name}: "
                        "the {n} bytes after it are skipped",
                        directory=self.directory,
                        offset=bad,
                        name=segment.path.name,
                        n=segment.end - bad,
                    )
                    segment.end = bad
                if records:
                    return [(payload, (seq, end)) for payload, end in records]
                continue
            if not later:
                return []
            # this segment is sealed and consumed: move on, delete it at the next save
            self._cursor = (later[0], len(SEGMENT_MAGIC))
            if segment is not None:
                del self._segments[seq]
                self._depth -= segment.records  # what a bad record hid, if anything
                self._bytes_held -= segment.nbytes
                self._doomed.append(segment.path)
                await self._save_cursor()

    def _consume(self, position: tuple[int, int], length: int) -> None:
        segment = self._segments[position[0]]
        segment.records -= 1
        segment.nbytes -= RECORD.size + length
        self._depth -= 1
        self._bytes_held -= RECORD.size + length
        self._cursor = position
        self._unsaved += 1

    async def _save_cursor(self) -> None:
        doomed, self._doomed = self._doomed, []
        generation = self._generation + 1
        segment, offset = self._cursor
        try:
            await self._in_thread(
                thd_save_cursor, self._cursor_fd, generation, segment, offset, doomed
            )
        except BaseException:
            self._doomed = doomed + self._doomed
            raise
        self._generation = generation
        self._unsaved = 0

    async def _save_cursor_quietly(self) -> None:
        """Save the cursor after a handler failed: a disk error is logged, not raised over
        the handler's."""
        if not (self._unsaved or self._doomed):
            return
        try:
            await self._save_cursor()
        except SpoolError as exc:
            self.log.error("{message}", message=str(exc))

    async def close(self) -> None:
        """Wait for the writes under way and a running replay's record, then close."""
        if self._state != "open":
            return
        self._state = "closing"
        while self._writing or self._pending or self._replaying:
            waiter: Deferred[None] = Deferred()
            self._waiters.append(waiter)
            await waiter
        assert self._writer is not None
        await self._in_thread(self._thd_close, self._writer)
        self._state = "closed"

    def _thd_close(self, writer: _SegmentWriter) -> None:
        try:
            writer.thd_close()
        finally:
            os.close(self._cursor_fd)
            os.close(self._lock_fd)  # releases the lock

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)

    async def _in_thread(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run ``function`` in the reactor's thread pool; an OS error as a SpoolError."""
        pool = self._reactor.getThreadPool()
        try:
            return await deferToThreadPool(self._reactor, pool, function, *args)
        except OSError as exc:
            raise SpoolError(f"spool {self.directory}: {exc}") from None
