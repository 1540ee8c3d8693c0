"""A durable spool on local disk for the meter frames the store cannot take in time.

When the store fails or falls behind, the push listener appends each frame it received to
the spool, and answers the meter once :meth:`Spool.append` has fired: by then the frame is
committed to disk.  When the store is back, :meth:`Spool.replay` hands the frames to a
handler, oldest first, and forgets each one only after its handler succeeded.  The spool
never looks inside a frame.

The spool is one SQLite database, ``spool.db`` in the spool directory (0600, in a 0700
directory): a table of records keyed by a sequence number.  One connection, used by one
thread at a time, with ``journal_mode=WAL``, ``synchronous=FULL`` (a commit returns once
the WAL is fsync'd) and ``locking_mode=EXCLUSIVE`` (the connection holds the database's
lock until it closes: a second process, or a second spool in this one, cannot open it).
Appends are committed in groups: while one transaction commits in a thread, the appends
that arrive wait, and the next transaction takes them all (1000 at once: 2 transactions).

What survives a crash (kill -9 or a power cut):

- Every append that fired: its transaction's commit is in the fsync'd WAL.  A transaction
  cut short by the crash is dropped by SQLite when the database opens next (the WAL's
  frames carry checksums): its appends never fired.
- A replay deletes the records its handler succeeded with every :data:`ACK_EVERY` records
  and when it ends.  A crash in between replays at most :data:`ACK_EVERY` records again: at
  least once, never lost.
- A damaged database (not a crash: what SQLite committed is whole) found when the spool
  opens is renamed ``spool-damaged-<time>.db``, with an error logged, and a new one is
  started, so that the SAC starts; ``sqlite3 <file> .recover`` reads what is left of it.

Why SQLite (issue 20): it replaced a home-made write-ahead log (segments of CRC'd records,
a two-slot cursor, its own torn-tail and damage recovery: 682 lines) that was as durable:
both acknowledge only after an fsync, both pass the same tests, kill -9 included.  This is
60% of the lines (401), and none of them is a file format or its recovery.  Throughput is the
same where the push path can take it: ``benchmarks/bench_spool.py --seconds 2 --rounds 5``
(2 shared cores, a virtual disk; SQLite against the old spool, records of 86 and 200
bytes) gave 0.77-0.96x and 2,850-3,117 appends/s with one in flight (the fsync's latency;
0.9-2.1x in other runs) and 0.84-0.97x, 132,000-142,000/s with 200 in flight, where the
whole push path stores about 2,300 sessions/s.  Sustained 1000 in flight, where the disk's
bandwidth counts, SQLite gave 0.85-0.89x (207,000-234,000/s): it writes each page twice,
in the WAL and at the checkpoint (216-469 bytes a record against 102-216).  A replay ran
at 0.69-0.90x (89,000-141,000 records/s, far above what the store takes), opening it at
5-7x.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, DeferredLock, fail
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from sac.errors import SacError

__all__ = ["ACK_EVERY", "OVERHEAD", "Spool", "SpoolBusy", "SpoolError", "SpoolFull"]

#: records consumed between two deletes of the records handled
ACK_EVERY = 64
#: what one read of a replay takes at most
READ_RECORDS = 256
#: rows one INSERT statement takes (2 parameters each: under SQLite's oldest limit, 999)
INSERT_ROWS = 400
#: the bytes a record is counted for beyond its payload (its key and its row's header)
OVERHEAD = 8

_SCHEMA = "CREATE TABLE IF NOT EXISTS record (seq INTEGER PRIMARY KEY, data BLOB NOT NULL)"


class SpoolError(SacError):
    """The spool cannot do what it was asked: a disk error, a closed or busy spool."""


class SpoolFull(SpoolError):
    """An append would take the spool over its ``max_bytes``."""


class SpoolBusy(SpoolError):
    """A replay was asked for while another one runs."""


# --- the thread side: each function runs in a thread, one at a time ------------------------


@dataclass
class _Opened:
    db: sqlite3.Connection
    depth: int  # records held
    nbytes: int  # their bytes, OVERHEAD included
    last: int  # the highest sequence number
    damaged: Path | None = None  # where a damaged database was moved


def thd_open(directory: Path) -> _Opened:
    """Open (or create) the database and take its lock.  A damaged one is moved aside."""
    if not directory.is_dir():
        directory.mkdir(mode=0o700, parents=True)
        _fsync_dir(directory.parent)
    path = directory / "spool.db"
    try:
        return _thd_connect(path)
    except sqlite3.DatabaseError as exc:
        if exc.sqlite_errorname not in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
            raise
    damaged = path.with_name(f"spool-damaged-{time.strftime('%Y%m%dT%H%M%S')}.db")
    for suffix in ("", "-wal"):
        with suppress(FileNotFoundError):
            path.with_name(path.name + suffix).rename(damaged.with_name(damaged.name + suffix))
    _fsync_dir(directory)
    opened = _thd_connect(path)
    opened.damaged = damaged
    return opened


def _thd_connect(path: Path) -> _Opened:
    # readable by this user only, whatever the umask; SQLite gives its WAL the same mode
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    db = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA auto_vacuum = INCREMENTAL")  # (a new database only)
        db.execute("PRAGMA locking_mode = EXCLUSIVE")
        if db.execute("PRAGMA journal_mode = WAL").fetchone()[0] != "wal":
            raise sqlite3.OperationalError("cannot use a write-ahead log")
        db.execute("PRAGMA synchronous = FULL")
        # (Debian's SQLite zeroes every page a delete frees: a write per page.  The records are
        # ciphered frames, and the file shrinks when the spool empties: zero only for free)
        db.execute("PRAGMA secure_delete = FAST")
        db.execute("PRAGMA journal_size_limit = 67108864")  # the WAL shrinks back to 64 MiB
        db.execute("BEGIN IMMEDIATE")  # takes the lock, held until the connection closes
        db.execute(_SCHEMA)
        db.execute("COMMIT")
        depth, size, last = db.execute(
            "SELECT count(*), total(length(data)), coalesce(max(seq), 0) FROM record"
        ).fetchone()
    except sqlite3.Error as exc:
        db.close()
        if exc.sqlite_errorname == "SQLITE_BUSY":
            raise SpoolError(f"spool {path.parent}: open in another process") from None
        raise
    return _Opened(db, depth, int(size) + OVERHEAD * depth, last)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def thd_insert(db: sqlite3.Connection, first: int, records: list[bytes]) -> None:
    """Append the records, numbered from ``first``, in one transaction, committed (the WAL
    fsync'd) on return."""
    try:
        db.execute("BEGIN IMMEDIATE")
        for start in range(0, len(records), INSERT_ROWS):  # one statement for many rows
            rows = records[start : start + INSERT_ROWS]
            values = ", ".join(["(?, ?)"] * len(rows))
            numbered = [x for row in enumerate(rows, first + start) for x in row]
            db.execute(f"INSERT INTO record VALUES {values}", numbered)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            with suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise


def thd_read(db: sqlite3.Connection, after: int) -> list[tuple[int, bytes]]:
    """The next records after sequence number ``after``, oldest first, one batch at most."""
    query = "SELECT seq, data FROM record WHERE seq > ? ORDER BY seq LIMIT ?"
    return db.execute(query, (after, READ_RECORDS)).fetchall()


def thd_forget(db: sqlite3.Connection, upto: int) -> None:
    """Delete the records up to sequence number ``upto`` (committed on return)."""
    db.execute("DELETE FROM record WHERE seq <= ?", (upto,))
    if db.execute("SELECT 1 FROM record LIMIT 1").fetchone() is None:
        db.execute("PRAGMA incremental_vacuum").fetchall()  # the free pages back to the disk


# --- the reactor side ----------------------------------------------------------------------


class Spool:
    """Frames on local disk, durable once :meth:`append` fired, replayed oldest first.

    ``max_bytes`` is the most the records not yet consumed may take, counting
    :data:`OVERHEAD` bytes each beyond the payload, and ``max_record`` the largest payload.
    One process at a time may open a spool directory.
    """

    log = Logger()

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        reactor: Any = None,
        max_bytes: int = 2 * 2**30,
        max_record: int = 1 << 20,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        if not 0 <= max_record < 2**30 or max_bytes <= 0:
            raise ValueError("spool sizes must be positive, and a record under 1 GiB")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.max_record = max_record
        self._reactor = reactor
        self._state = "new"  # new, opening, open, closing, closed
        self._db: sqlite3.Connection | None = None
        self._lock = DeferredLock()  # one thread at a time on the connection
        self._pending: list[tuple[bytes, Deferred[None]]] = []
        self._writing = False
        self._depth = 0
        self._bytes_held = 0
        self._next = 1  # the sequence number of the next record appended
        self._cursor = 0  # that of the last record handled
        self._unsaved = 0  # records handled and not yet deleted
        self._replaying = False
        self._waiters: list[Deferred[None]] = []  # close(), waiting for writes and replay

    @property
    def depth(self) -> int:
        """Records appended (durable or not yet) and not yet consumed."""
        return self._depth

    @property
    def bytes_held(self) -> int:
        """The size of those records, :data:`OVERHEAD` included."""
        return self._bytes_held

    async def open(self) -> None:
        """Create the directory and the database if need be, and take the lock."""
        if self._state != "new":
            raise SpoolError(f"spool {self.directory}: already opened")
        self._state = "opening"
        try:
            opened = await self._in_thread(thd_open, self.directory)
        except BaseException:
            self._state = "new"
            raise
        if opened.damaged is not None:
            self.log.error(
                "spool {directory}: the database was damaged, moved to {damaged} (its"
                " records can be read with sqlite3's .recover); a new one started",
                directory=self.directory,
                damaged=opened.damaged.name,
            )
        self._db, self._depth, self._bytes_held = opened.db, opened.depth, opened.nbytes
        self._next = opened.last + 1
        self._state = "open"

    def append(self, record: bytes) -> Deferred[None]:
        """Add a record; fires once it is committed to disk.

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
        size = OVERHEAD + len(record)
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
        """Commit every pending record in one transaction, in a thread."""
        batch, self._pending = self._pending, []
        self._writing = True
        first, self._next = self._next, self._next + len(batch)
        written = Deferred.fromCoroutine(self._db_call(thd_insert, first, [r for r, _ in batch]))
        written.addBoth(self._written, batch)

    def _written(self, result: Any, batch: list[tuple[bytes, Deferred[None]]]) -> None:
        self._writing = False
        if self._pending:
            self._write_pending()
        else:
            self._wake()
        if isinstance(result, Failure):
            self.log.error("{message}", message=str(result.value))
            for record, _ in batch:
                self._depth -= 1
                self._bytes_held -= OVERHEAD + len(record)
        for _, done in batch:
            if isinstance(result, Failure):
                done.errback(result)
            else:
                done.callback(None)

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
                batch = await self._db_call(thd_read, self._cursor)
                if not batch:
                    break
                room = None if limit is None else limit - consumed
                consumed += await self._hand_over(batch, handler, room)
        except BaseException:
            await self._forget_quietly()
            raise
        else:
            await self._forget()
        finally:
            self._replaying = False
            self._wake()
        return consumed

    async def _hand_over(
        self,
        batch: list[tuple[int, bytes]],
        handler: Callable[[bytes], Awaitable[Any]],
        room: int | None,
    ) -> int:
        """Hand ``batch``'s records to ``handler`` in turn, at most ``room`` of them (None: no
        limit) and while the spool is open, each marked handled once its handler succeeded
        (forgotten on disk every ACK_EVERY records); how many were handled."""
        handled = 0
        for seq, data in batch:
            if (room is not None and handled >= room) or self._state != "open":
                break
            await handler(data)
            self._cursor = seq
            self._depth -= 1
            self._bytes_held -= OVERHEAD + len(data)
            self._unsaved += 1
            handled += 1
            if self._unsaved >= ACK_EVERY:
                await self._forget()
        return handled

    async def _forget(self) -> None:
        if self._unsaved:
            await self._db_call(thd_forget, self._cursor)
            self._unsaved = 0

    async def _forget_quietly(self) -> None:
        """Forget the records handled after a handler failed: a disk error is logged, not
        raised over the handler's."""
        try:
            await self._forget()
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
        await self._db_call(sqlite3.Connection.close)  # releases the lock
        self._state = "closed"

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)

    async def _db_call(self, function: Callable[..., Any], *args: Any) -> Any:
        """``function(connection, *args)`` in a thread, once the calls before it are done."""
        await self._lock.acquire()
        try:
            return await self._in_thread(function, self._db, *args)
        finally:
            self._lock.release()

    async def _in_thread(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run ``function`` in the reactor's thread pool; an OS or SQLite error as a
        SpoolError."""
        pool = self._reactor.getThreadPool()
        try:
            # off-reactor: SQLite's writes and fsyncs, file creation, in the reactor's pool
            return await deferToThreadPool(self._reactor, pool, function, *args)
        except (OSError, sqlite3.Error) as exc:
            raise SpoolError(f"spool {self.directory}: {exc}") from None
