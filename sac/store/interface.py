"""IStore: what the rest of the SAC asks of its memory.  Every method is asynchronous."""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import Interface, implementer

from sac import passwords
from sac.dlms import Obis
from sac.errors import ConfigurationError
from sac.keys import MasterKey
from sac.passwords import ScryptParams
from sac.store import exports, schema
from sac.store import operations as ops
from sac.store import provisioning as prov
from sac.store import transactions as tx
from sac.store.keycsv import KeyRow
from sac.store.model import (
    Actor,
    ApiToken,
    AuditEntry,
    Command,
    CommandState,
    CommandTransition,
    Event,
    EventPage,
    Ingest,
    IngestResult,
    InvocationCounters,
    Meter,
    MeterKeys,
    MeterPage,
    MeterQuery,
    MeterState,
    NewMeter,
    PollJob,
    Reading,
    ReadingBuckets,
    ReadingPage,
    Role,
    User,
    WebSession,
)

__all__ = ["IStore", "Store"]


class IStore(Interface):
    async def open(upto: int | None = None) -> tuple[int, int]:
        """Apply the migrations (up to version ``upto``: for upgrade tests) and check the
        master key; (schema version found, version now)."""

    async def close() -> None:
        """Release the connections."""

    async def ping() -> bool:
        """One round trip to the database (health checks); StorageError when it fails."""

    async def add_meter(
        meter: NewMeter,
        by: Actor | None = None,
        *,
        keys: Mapping[int, tuple[bytes, bytes | None]] = {},
    ) -> Meter:
        """Add a meter, with its keys ({client SAP: (EK, AK or None: the EK)}) in the same
        transaction; Conflict when its LDN or system title is taken."""

    async def get_meter(ldn: str) -> Meter | None:
        """The meter with this LDN."""

    async def meter_by_system_title(title: bytes) -> Meter | None:
        """The meter with this system title (how a push is identified)."""

    async def meters_by_ip(ip: str) -> list[Meter]:
        """The meters whose allowlist holds ``ip`` (a push with an empty system title)."""

    async def push_candidates(ip: str, limit: int) -> list[Meter]:
        """The meters a push without system title from ``ip`` may come from, at most
        ``limit``: those whose allowlist holds ``ip`` first, then those without allowlist
        last heard from ``ip`` (most recent first); only meters with a system title."""

    async def watching() -> None:
        """Fires once changes made by other processes reach the watchers (on PostgreSQL,
        once LISTEN is in force; at once on SQLite)."""

    async def known_meters(limit: int) -> list[tuple[str, bytes, tuple[str, ...]]]:
        """(LDN, system title, allowlist) of up to ``limit`` active meters with a system
        title, the latest heard first."""

    def watch_meters(watcher: Callable[[frozenset[str] | None], None]) -> Callable[[], None]:
        """Call ``watcher`` with the LDNs of the meters whose row or keys a committed change
        touched (None: possibly any meter): in this process as soon as the change returns,
        and on PostgreSQL, in every other process on the database within moments (LISTEN/
        NOTIFY).  The call that stops watching."""

    async def claim_polls(limit: int, lease: dt.timedelta) -> list[PollJob]:
        """Meters with an address due for a poll, leased to this process for ``lease``."""

    async def finish_poll(ldn: str, next_poll: dt.datetime, failures: int) -> None:
        """Record a poll's end: when the next is due, failures in a row."""

    async def set_meter_state(ldn: str, state: MeterState, by: Actor | None = None) -> None:
        """Enable or disable a meter."""

    async def set_keys(
        ldn: str, client_sap: int, ek: bytes, ak: bytes | None = None, by: Actor | None = None
    ) -> None:
        """Store a meter's keys for a client, wrapped; AK defaults to EK."""

    async def keys(ldn: str, client_sap: int) -> MeterKeys | None:
        """A meter's keys for a client, in clear (in memory only)."""

    async def has_keys(ldn: str, client_sap: int) -> bool:
        """Whether a meter's keys for a client are set (they stay wrapped); UnknownMeter."""

    async def reserve_invocation_counters(ldn: str, client_sap: int, count: int = 1) -> int:
        """The first of ``count`` counters of ours, stored as used before they are."""

    async def raise_invocation_counter(ldn: str, client_sap: int, used: int) -> None:
        """Reserve above ``used`` from now on (the caller bounds it: see MeterSession)."""

    async def prove_invocation_counter(ldn: str, client_sap: int, accepted: int) -> None:
        """The meter proved, by authenticated data, that it accepted our counter
        ``accepted``: the proven mark (and the reservation) move up to it."""

    async def counter_state(ldn: str, client_sap: int) -> InvocationCounters:
        """The meter's counters for a client: ours reserved, ours proven, theirs."""

    async def reset_invocation_counters(ldn: str, by: Actor | None = None) -> int:
        """Forget a meter's counters (every client), audited: after its keys were changed
        in the field.  How many clients had counters; UnknownMeter."""

    async def accept_peer_counter(ldn: str, client_sap: int, counter: int) -> bool:
        """Record the meter's counter when newer than the last: False for a replay."""

    async def invocation_counters(ldn: str, client_sap: int) -> tuple[int, int | None]:
        """(the last of ours reserved, the last of theirs accepted)."""

    async def rotate_master_key(new: MasterKey, by: Actor | None = None) -> int:
        """Re-wrap every key under ``new`` in one transaction; the number of keys."""

    async def import_keys(
        rows: Sequence[KeyRow], replace: bool = False, by: Actor | None = None
    ) -> int:
        """Set the keys of parsed CSV rows, all or none; KeyImportError lists every bad line
        (unknown meter, keys already present unless ``replace``)."""

    async def add_readings(readings: Sequence[Reading]) -> int:
        """Store a batch of readings of many meters in one transaction (all or none); the
        number of new ones (a reading already held is not stored twice)."""

    async def ingest(batch: Ingest) -> IngestResult:
        """Store what sessions brought in one transaction: readings, events, and each meter's
        list values and last connection (moved forward only)."""

    async def last_readings(
        ldn: str, obis: Obis, attribute: int = 2, limit: int = 1
    ) -> list[Reading]:
        """The latest readings of one attribute of one meter, newest first."""

    async def readings_between(
        ldn: str,
        obis: Obis,
        attribute: int = 2,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        limit: int = 100_000,
    ) -> list[Reading]:
        """One attribute of one meter captured in [start, end) (a bound None: open), oldest
        first; the newest ``limit`` when there are more.  UnknownMeter for an unknown LDN."""

    async def reading_buckets(
        ldn: str,
        obis: Obis,
        attribute: int,
        start: dt.datetime,
        end: dt.datetime,
        width: int,
        zone: dt.tzinfo = dt.UTC,
    ) -> ReadingBuckets:
        """[start, end) of one attribute of one meter cut into buckets of ``width`` seconds
        from midnight in ``zone``: the last reading of each, and how many the range holds.
        For charts: the database does the thinning.  UnknownMeter for an unknown LDN."""

    async def count_readings() -> int:
        """How many readings the store holds."""

    async def list_meters(
        after: str | None = None,
        limit: int = 50,
        state: MeterState | None = None,
        search: str | None = None,
        *,
        query: MeterQuery | None = None,
    ) -> MeterPage:
        """A page of the meter list after the cursor ``after`` (a page's ``next_after``; in
        LDN order, an LDN); ValueError for a cursor that is not one.  ``query`` filters and
        sorts (it supersedes ``state`` and ``search``: a prefix of the LDN or of the PDR);
        without it, LDN order."""

    async def count_meters(
        state: MeterState | None = None, *, query: MeterQuery | None = None
    ) -> int:
        """How many meters (of a state, or that ``query``'s filters keep)."""

    async def connections_since(since: dt.datetime) -> int:
        """How many meters were heard at ``since`` or later."""

    async def events(ldn: str, limit: int = 100) -> list[Event]:
        """A meter's latest events, newest first."""

    async def queue_command(
        ldn: str,
        kind: str,
        params: Mapping[str, Any],
        by: Actor,
        expires: dt.datetime | None = None,
        priority: int = 0,
    ) -> Command:
        """Queue a command for a meter (pending), audited; higher priorities run first."""

    async def get_command(command_id: int) -> Command:
        """A command; UnknownCommand if none."""

    async def commands(
        ldn: str | None = None, states: Collection[CommandState] | None = None, limit: int = 100
    ) -> list[Command]:
        """Commands, newest first."""

    async def claim_commands(ldn: str, by: str | None = None) -> list[Command]:
        """A meter's pending commands, now sent, highest priority first: for the session
        that has the meter on line (``by`` names it in the command log).  Expired ones are
        marked so; another process's claims are skipped."""

    async def command_history(command_id: int) -> list[CommandTransition]:
        """Every transition of a command with its time, oldest first."""

    async def finish_command(command_id: int, ok: bool, result: str | None = None) -> Command:
        """A sent command is done (``ok``) or failed, with the meter's answer."""

    async def retry_command(command_id: int, reason: str) -> Command:
        """A sent command goes back to pending, for the meter's next session."""

    async def cancel_command(command_id: int, by: Actor) -> Command:
        """Cancel a pending command, audited; CommandStateError once it is sent."""

    async def expire_commands() -> int:
        """Mark the pending commands past their deadline expired; how many."""

    async def requeue_stale_commands(older_than: dt.timedelta) -> int:
        """Sent commands left by a dead process go back to pending; how many."""

    async def add_user(name: str, password: str, role: Role, by: Actor | None = None) -> User:
        """A new user; the password is hashed with scrypt (off the reactor)."""

    async def authenticate(name: str, password: str, address: str | None = None) -> User | None:
        """The active user with this name and password, else None -- one answer, and one
        scrypt check, whether the password is wrong, the name unknown or the user locked
        out (a locked user's password is not checked: a decoy hash is), audited with
        ``address``.  The attempt is reserved before the check (:func:`ops.reserve_sign_in`):
        a user gets at most ``LOCKOUT_FAILURES`` checks before the lock-out, however many
        guesses arrive at once, from however many processes."""

    async def create_web_session(
        name: str,
        ttl: dt.timedelta,
        address: str | None = None,
        lifetime: dt.timedelta | None = None,
    ) -> tuple[str, WebSession]:
        """A new signed-in browser of the active user ``name`` for ``ttl`` (at most
        ``lifetime``): (its token, for the cookie; the session).  Only a hash of the token
        is stored."""

    async def web_session(
        token: str, ttl: dt.timedelta | None = None, lifetime: dt.timedelta | None = None
    ) -> WebSession | None:
        """The session of ``token``, None when unknown, over or its user disabled; with
        ``ttl``, extended to now + ``ttl`` when less than half of it is left, but never
        beyond ``lifetime`` after the sign-in (then it is over, in use or not)."""

    async def end_web_session(token: str) -> None:
        """Sign a browser out."""

    async def update_user(
        name: str,
        by: Actor | None = None,
        *,
        role: Role | None = None,
        active: bool | None = None,
        password: str | None = None,
    ) -> User:
        """Change a user's role, activity or password, audited; the last admin stays.  A new
        role or password, or disabling, ends the user's web sessions."""

    async def users() -> list[User]:
        """Every user, by name."""

    async def user(name: str) -> User | None:
        """The user of this name as stored now (its role, whether active), or None."""

    async def record(
        by: Actor, action: str, target: str | None = None, detail: str | None = None
    ) -> None:
        """A line of the audit trail for an action that changes nothing stored (a login, an
        export)."""

    async def audit_log(limit: int = 100, before: int | None = None) -> list[AuditEntry]:
        """The audit trail, newest first."""

    # --- provisioning and other systems ---------------------------------------------------

    async def add_meters(
        meters: Sequence[tuple[NewMeter, Mapping[int, tuple[bytes, bytes | None]]]],
        by: Actor | None = None,
        *,
        check_only: bool = False,
    ) -> list[Meter]:
        """Add every meter with its keys, or none: BulkError {position: reason}.
        ``check_only``: the same refusals, nothing written (an empty list when none)."""

    async def update_meter(ldn: str, changes: Mapping[str, Any], by: Actor | None = None) -> Meter:
        """Change some of a meter's fields (METER_FIELDS, ``state``), audited; UnknownMeter,
        Conflict (a system title taken), ValueError (a bad value)."""

    async def delete_meter(ldn: str, by: Actor | None = None, purge: bool = False) -> None:
        """Remove a meter, audited; Conflict if it has history, unless ``purge``."""

    async def update_meters(
        items: Sequence[tuple[str, Mapping[str, Any]]],
        by: Actor | None = None,
        *,
        check_only: bool = False,
    ) -> list[Meter]:
        """Change many meters (fields, ``state`` and ``keys``: {SAP: (EK, AK or None)}), all
        or none: BulkError {position: reason}."""

    async def delete_meters(
        ldns: Sequence[str],
        by: Actor | None = None,
        purge: bool = False,
        *,
        check_only: bool = False,
    ) -> None:
        """Remove many meters, all or none: BulkError {position: reason}."""

    async def readings_page(
        start: dt.datetime,
        end: dt.datetime,
        *,
        ldn: str | None = None,
        obis: Obis | None = None,
        attribute: int | None = None,
        cursor: str | None = None,
        limit: int = 1000,
    ) -> ReadingPage:
        """Readings captured in [start, end), per meter then in time, resumable from the
        page's cursor; ValueError for a bad range, page size or cursor."""

    async def events_page(
        start: dt.datetime,
        end: dt.datetime,
        *,
        ldn: str | None = None,
        cursor: str | None = None,
        limit: int = 1000,
    ) -> EventPage:
        """Events that occurred in [start, end), in time order, resumable from a cursor."""

    async def create_api_token(
        user: str, name: str, by: Actor | None = None
    ) -> tuple[str, ApiToken]:
        """A token for a machine client acting as ``user``: (the secret, shown once; the
        token).  Only its hash is stored."""

    async def api_token(token: str) -> ApiToken | None:
        """The live token with this secret (not revoked, its user active), else None."""

    async def api_tokens() -> list[ApiToken]:
        """Every token, revoked ones too, oldest first."""

    async def revoke_api_token(token_id: int, by: Actor | None = None) -> None:
        """Revoke a token for good; KeyError for an unknown id."""


_METER_ID_CACHE = 1_000_000  # LDNs remembered, some 100 MB at most
_log = Logger()


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@implementer(IStore)
class Store:
    """IStore on top of one method a backend provides: run a transaction generator."""

    dialect = ""

    def __init__(
        self,
        master_key: MasterKey | None,
        clock: Callable[[], dt.datetime] = _utc_now,
        reactor: Any = None,
        password_params: ScryptParams = passwords.DEFAULT,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self._master = master_key
        self._clock = clock
        self._reactor = reactor
        self._password_params = password_params
        # a hash to check when the user is unknown, so a wrong name costs what a wrong
        # password costs (no user enumeration by timing)
        self._decoy_hash: str | None = None
        # {LDN: meter id} for the ingest path (a meter deleted and added again is renumbered:
        # its entry goes with the change, see _meters_changed)
        self._meter_ids: dict[str, int] = {}
        self._watchers: list[Callable[[frozenset[str] | None], None]] = []

    async def _run(self, transaction: tx.Transaction) -> Any:
        raise NotImplementedError("a backend runs transactions")

    # --- changes of meters and keys, told to whoever caches them (the push path)

    def watch_meters(self, watcher: Callable[[frozenset[str] | None], None]) -> Callable[[], None]:
        self._watchers.append(watcher)

        def stop() -> None:
            if watcher in self._watchers:
                self._watchers.remove(watcher)

        return stop

    async def watching(self) -> None:
        """Once changes made elsewhere reach the watchers (SQLite: one process, at once)."""

    def _meters_changed(self, ldns: frozenset[str] | None) -> None:
        """Tell this process's watchers (and forget the meter ids of ``ldns``)."""
        if ldns is None:
            self._meter_ids.clear()
        else:
            for ldn in ldns:
                self._meter_ids.pop(ldn, None)
        for watcher in list(self._watchers):
            try:
                watcher(ldns)
            except Exception:
                _log.failure("a watcher of meter changes failed")

    def _announce(self, ldns: frozenset[str] | None) -> tx.Transaction:
        """Statements that tell the other processes, run in the changing transaction (so
        they hear of it only if it commits).  SQLite: one process, nothing to tell."""
        return
        yield  # a generator

    def _announced(self, change: tx.Transaction, ldns: frozenset[str] | None) -> tx.Transaction:
        result = yield from change
        yield from self._announce(ldns)
        return result

    async def _change(self, change: tx.Transaction, ldns: Collection[str] | None) -> Any:
        """Run a transaction that changes meters or their keys: the other processes are
        told in it, this one's watchers once it has returned (or failed: a commit whose
        answer was lost is a change too; forgetting once too often costs one lookup)."""
        changed = frozenset(ldns) if ldns is not None else None
        try:
            return await self._run(self._announced(change, changed))
        finally:
            self._meters_changed(changed)

    def _in_thread(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        """CPU-bound work (scrypt) off the reactor thread."""
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), f, *args)

    def _master_key(self) -> MasterKey:
        if self._master is None:
            raise ConfigurationError(
                "meter keys need a master key (SAC_MASTER_KEY or [store] master_key_file)"
            )
        return self._master

    async def open(self, upto: int | None = None) -> tuple[int, int]:
        migrations = schema.load_migrations(self.dialect)[:upto]
        versions = await self._run(schema.migrate(migrations, self._clock(), self.dialect))
        await self._run(tx.check_master_key(self._master))
        return versions

    async def close(self) -> None:
        raise NotImplementedError("a backend closes its connections")

    async def ping(self) -> bool:
        return bool(await self._run(ops.ping()))

    # --- meters and keys

    async def add_meter(
        self,
        meter: NewMeter,
        by: Actor | None = None,
        *,
        keys: Mapping[int, tuple[bytes, bytes | None]] = {},
    ) -> Meter:
        now = self._clock()
        master = self._master_key() if keys else None
        change = tx.add_meter(meter, now, master, keys)
        detail = f"keys for client {', '.join(map(str, sorted(keys)))}" if keys else None
        return await self._change(
            ops.audited(change, by, "add meter", meter.ldn, now, detail), [meter.ldn]
        )

    async def get_meter(self, ldn: str) -> Meter | None:
        return await self._run(tx.get_meter(ldn))

    async def meter_by_system_title(self, title: bytes) -> Meter | None:
        return await self._run(tx.meter_by_system_title(title))

    async def meters_by_ip(self, ip: str) -> list[Meter]:
        return await self._run(tx.meters_by_ip(ip))

    async def push_candidates(self, ip: str, limit: int) -> list[Meter]:
        return await self._run(tx.push_candidates(ip, limit))

    async def known_meters(self, limit: int) -> list[tuple[str, bytes, tuple[str, ...]]]:
        return await self._run(tx.known_meters(limit))

    async def claim_polls(self, limit: int, lease: dt.timedelta) -> list[PollJob]:
        now = self._clock()
        return await self._run(tx.claim_polls(now, limit, now + lease))

    async def finish_poll(self, ldn: str, next_poll: dt.datetime, failures: int) -> None:
        await self._run(tx.finish_poll(ldn, next_poll, failures))

    async def set_meter_state(self, ldn: str, state: MeterState, by: Actor | None = None) -> None:
        now = self._clock()
        change = tx.set_meter_state(ldn, state, now)
        await self._change(ops.audited(change, by, f"set meter {state.value}", ldn, now), [ldn])

    async def set_keys(
        self,
        ldn: str,
        client_sap: int,
        ek: bytes,
        ak: bytes | None = None,
        by: Actor | None = None,
    ) -> None:
        now = self._clock()
        change = tx.set_keys(self._master_key(), ldn, client_sap, ek, ak, now)
        audited = ops.audited(change, by, "set keys", ldn, now, f"client {client_sap}")
        await self._change(audited, [ldn])

    async def keys(self, ldn: str, client_sap: int) -> MeterKeys | None:
        return await self._run(tx.get_keys(self._master_key(), ldn, client_sap))

    async def has_keys(self, ldn: str, client_sap: int) -> bool:
        return await self._run(prov.has_keys(ldn, client_sap))

    async def reserve_invocation_counters(self, ldn: str, client_sap: int, count: int = 1) -> int:
        return await self._run(tx.reserve_invocation_counters(ldn, client_sap, count))

    async def raise_invocation_counter(self, ldn: str, client_sap: int, used: int) -> None:
        await self._run(tx.raise_invocation_counter(ldn, client_sap, used))

    async def prove_invocation_counter(self, ldn: str, client_sap: int, accepted: int) -> None:
        await self._run(tx.prove_invocation_counter(ldn, client_sap, accepted))

    async def counter_state(self, ldn: str, client_sap: int) -> InvocationCounters:
        return await self._run(tx.counter_state(ldn, client_sap))

    async def reset_invocation_counters(self, ldn: str, by: Actor | None = None) -> int:
        now = self._clock()
        change = tx.reset_invocation_counters(ldn)
        return await self._run(ops.audited(change, by, "reset counters", ldn, now))

    async def accept_peer_counter(self, ldn: str, client_sap: int, counter: int) -> bool:
        return await self._run(tx.accept_peer_counter(ldn, client_sap, counter))

    async def invocation_counters(self, ldn: str, client_sap: int) -> tuple[int, int | None]:
        return await self._run(tx.invocation_counters(ldn, client_sap))

    async def rotate_master_key(self, new: MasterKey, by: Actor | None = None) -> int:
        now = self._clock()
        change = tx.rotate_master_key(self._master_key(), new)
        count = await self._run(
            ops.audited(change, by, "rotate master key", None, now, f"to {new.id_hex}")
        )
        self._master = new
        return count

    async def import_keys(
        self, rows: Sequence[KeyRow], replace: bool = False, by: Actor | None = None
    ) -> int:
        now = self._clock()
        change = tx.import_keys(self._master_key(), rows, replace, now)
        detail = f"{len(rows)} rows" + (", replacing" if replace else "")
        audited = ops.audited(change, by, "import keys", None, now, detail)
        return await self._change(audited, {r.ldn for r in rows})

    # --- readings, events, the meter list

    async def add_readings(self, readings: Sequence[Reading]) -> int:
        return (await self.ingest(Ingest(readings=readings))).readings

    async def ingest(self, batch: Ingest) -> IngestResult:
        if not (batch.readings or batch.events or batch.statuses or batch.counters):
            return IngestResult(0, 0)
        if len(self._meter_ids) > _METER_ID_CACHE:
            self._meter_ids.clear()
        return await self._run(tx.ingest(batch, self._meter_ids))

    async def last_readings(
        self, ldn: str, obis: Obis, attribute: int = 2, limit: int = 1
    ) -> list[Reading]:
        return await self._run(tx.last_readings(ldn, obis, attribute, limit))

    async def readings_between(
        self,
        ldn: str,
        obis: Obis,
        attribute: int = 2,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        limit: int = 100_000,
    ) -> list[Reading]:
        return await self._run(tx.readings_between(ldn, obis, attribute, start, end, limit))

    async def reading_buckets(
        self,
        ldn: str,
        obis: Obis,
        attribute: int,
        start: dt.datetime,
        end: dt.datetime,
        width: int,
        zone: dt.tzinfo = dt.UTC,
    ) -> ReadingBuckets:
        return await self._run(tx.reading_buckets(ldn, obis, attribute, start, end, width, zone))

    async def count_readings(self) -> int:
        return await self._run(tx.count_readings())

    async def list_meters(
        self,
        after: str | None = None,
        limit: int = 50,
        state: MeterState | None = None,
        search: str | None = None,
        *,
        query: MeterQuery | None = None,
    ) -> MeterPage:
        if query is None:
            return await self._run(tx.list_meters(after, limit, MeterQuery(search, state)))
        return await self._run(tx.list_meters(after, limit, query, total=True))

    async def count_meters(
        self, state: MeterState | None = None, *, query: MeterQuery | None = None
    ) -> int:
        return await self._run(tx.count_meters(query or MeterQuery(state=state)))

    async def connections_since(self, since: dt.datetime) -> int:
        return await self._run(tx.connections_since(since))

    async def events(self, ldn: str, limit: int = 100) -> list[Event]:
        return await self._run(tx.events(ldn, limit))

    # --- commands

    async def queue_command(
        self,
        ldn: str,
        kind: str,
        params: Mapping[str, Any],
        by: Actor,
        expires: dt.datetime | None = None,
        priority: int = 0,
    ) -> Command:
        now = self._clock()
        change = ops.queue_command(ldn, kind, params, by.name, expires, now, priority)
        return await self._run(ops.audited(change, by, f"queue {kind}", ldn, now))

    async def get_command(self, command_id: int) -> Command:
        return await self._run(ops.get_command(command_id))

    async def commands(
        self,
        ldn: str | None = None,
        states: Collection[CommandState] | None = None,
        limit: int = 100,
    ) -> list[Command]:
        return await self._run(ops.commands(ldn, states, limit))

    async def claim_commands(self, ldn: str, by: str | None = None) -> list[Command]:
        return await self._run(ops.claim_commands(ldn, self._clock(), by))

    async def command_history(self, command_id: int) -> list[CommandTransition]:
        return await self._run(ops.command_history(command_id))

    async def finish_command(self, command_id: int, ok: bool, result: str | None = None) -> Command:
        to = CommandState.DONE if ok else CommandState.FAILED
        return await self._run(ops.move_command(command_id, to, result, self._clock()))

    async def retry_command(self, command_id: int, reason: str) -> Command:
        change = ops.move_command(command_id, CommandState.PENDING, reason, self._clock())
        return await self._run(change)

    async def cancel_command(self, command_id: int, by: Actor) -> Command:
        now = self._clock()
        change = ops.move_command(command_id, CommandState.CANCELLED, f"by {by.name}", now)
        return await self._run(ops.audited(change, by, "cancel command", str(command_id), now))

    async def expire_commands(self) -> int:
        return await self._run(ops.expire_commands(self._clock()))

    async def requeue_stale_commands(self, older_than: dt.timedelta) -> int:
        now = self._clock()
        return await self._run(ops.requeue_stale_commands(now - older_than, now))

    # --- users and the audit trail

    async def _hash(self, password: str) -> str:
        return await self._in_thread(passwords.hash_password, password, self._password_params)

    async def add_user(self, name: str, password: str, role: Role, by: Actor | None = None) -> User:
        hashed = await self._hash(password)
        now = self._clock()
        change = ops.add_user(name, hashed, role, now)
        return await self._run(ops.audited(change, by, "add user", name, now, role.value))

    async def _decoy_check(self, password: str) -> None:
        """The scrypt check a real password costs, against a hash of nobody's: an unknown or
        locked user is answered no sooner than a wrong password."""
        if self._decoy_hash is None:
            self._decoy_hash = await self._hash("not a password of anyone")
        await self._in_thread(passwords.verify_password, password, self._decoy_hash)

    async def authenticate(
        self, name: str, password: str, address: str | None = None
    ) -> User | None:
        by = Actor(name, address)
        known = len(name) <= ops.MAX_USER_NAME
        found = await self._run(ops.login_record(name)) if known else None
        if found is None:
            await self._decoy_check(password)
            detail = "no active user of this name"
            await self._run(ops.audit(by, "sign-in failed", None, detail, self._clock()))
            return None
        user, hashed, _ = found
        failures = await self._run(ops.reserve_sign_in(user, by, self._clock()))
        if failures is None:  # locked out, or enough attempts under way: not checked
            await self._decoy_check(password)
            detail = "locked out: password not checked"
            await self._run(ops.audit(by, "sign-in failed", None, detail, self._clock()))
            return None
        if not await self._in_thread(passwords.verify_password, password, hashed):
            await self._run(ops.sign_in_failed(user, by, self._clock(), failures))
            return None
        rehashed = None
        if passwords.needs_rehash(hashed, self._password_params):
            rehashed = await self._hash(password)
        if not await self._run(ops.signed_in(user, by, self._clock(), rehashed)):
            return None
        return dataclasses.replace(user, locked_until=None)  # the sign-in lifted any lock

    async def update_user(
        self,
        name: str,
        by: Actor | None = None,
        *,
        role: Role | None = None,
        active: bool | None = None,
        password: str | None = None,
    ) -> User:
        hashed = await self._hash(password) if password is not None else None
        now = self._clock()
        change = ops.update_user(name, now, role=role, active=active, password_hash=hashed)
        what = ", ".join(
            part
            for part in (
                f"role {role.value}" if role is not None else "",
                ("enabled" if active else "disabled") if active is not None else "",
                "password" if password is not None else "",
            )
            if part
        )
        return await self._run(ops.audited(change, by, "update user", name, now, what))

    async def create_web_session(
        self,
        name: str,
        ttl: dt.timedelta,
        address: str | None = None,
        lifetime: dt.timedelta | None = None,
    ) -> tuple[str, WebSession]:
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = self._clock()
        change = ops.create_web_session(name, token, csrf, now, ttl, address, lifetime)
        return token, await self._run(change)

    async def web_session(
        self, token: str, ttl: dt.timedelta | None = None, lifetime: dt.timedelta | None = None
    ) -> WebSession | None:
        return await self._run(ops.web_session(token, self._clock(), ttl, lifetime))

    async def end_web_session(self, token: str) -> None:
        await self._run(ops.end_web_session(token))

    async def users(self) -> list[User]:
        return await self._run(ops.users())

    async def user(self, name: str) -> User | None:
        return await self._run(ops.get_user(name))

    async def record(
        self, by: Actor, action: str, target: str | None = None, detail: str | None = None
    ) -> None:
        await self._run(ops.audit(by, action, target, detail, self._clock()))

    async def audit_log(self, limit: int = 100, before: int | None = None) -> list[AuditEntry]:
        return await self._run(ops.audit_log(limit, before))

    async def add_meters(
        self,
        meters: Sequence[tuple[NewMeter, Mapping[int, tuple[bytes, bytes | None]]]],
        by: Actor | None = None,
        *,
        check_only: bool = False,
    ) -> list[Meter]:
        now = self._clock()
        keyed = any(keys for _, keys in meters) and not check_only
        change = prov.add_meters(meters, now, self._master_key() if keyed else None, check_only)
        detail = f"{len(meters)} meters"
        audited = ops.audited(change, by, "add meters", None, now, detail)
        return await self._trial(audited, None if check_only else [m.ldn for m, _ in meters])

    async def _trial(self, transaction: tx.Transaction, ldns: Collection[str] | None) -> Any:
        """Run a bulk change of the meters ``ldns`` (None: only checked); one that was only
        checked (CheckedOnly, rolled back) gives []."""
        try:
            if ldns is None:
                return await self._run(transaction)
            return await self._change(transaction, ldns)
        except prov.CheckedOnly:
            return []

    async def update_meter(
        self, ldn: str, changes: Mapping[str, Any], by: Actor | None = None
    ) -> Meter:
        now = self._clock()
        detail = ", ".join(sorted(changes))
        change = prov.update_meter(ldn, changes, now)
        return await self._change(ops.audited(change, by, "update meter", ldn, now, detail), [ldn])

    async def delete_meter(self, ldn: str, by: Actor | None = None, purge: bool = False) -> None:
        now = self._clock()
        change = prov.delete_meter(ldn, purge)
        detail = "with its history" if purge else None
        await self._change(ops.audited(change, by, "delete meter", ldn, now, detail), [ldn])

    async def update_meters(
        self,
        items: Sequence[tuple[str, Mapping[str, Any]]],
        by: Actor | None = None,
        *,
        check_only: bool = False,
    ) -> list[Meter]:
        now = self._clock()
        master = self._master_key() if any(c.get("keys") for _, c in items) else None
        change = prov.update_meters(items, now, master, check_only)
        detail = f"{len(items)} meters"
        audited = ops.audited(change, by, "update meters", None, now, detail)
        return await self._trial(audited, None if check_only else [ldn for ldn, _ in items])

    async def delete_meters(
        self,
        ldns: Sequence[str],
        by: Actor | None = None,
        purge: bool = False,
        *,
        check_only: bool = False,
    ) -> None:
        now = self._clock()
        change = prov.delete_meters(ldns, purge, check_only)
        detail = f"{len(ldns)} meters" + (" with their history" if purge else "")
        audited = ops.audited(change, by, "delete meters", None, now, detail)
        await self._trial(audited, None if check_only else ldns)

    async def readings_page(
        self,
        start: dt.datetime,
        end: dt.datetime,
        *,
        ldn: str | None = None,
        obis: Obis | None = None,
        attribute: int | None = None,
        cursor: str | None = None,
        limit: int = 1000,
    ) -> ReadingPage:
        return await self._run(
            exports.readings_page(
                start, end, ldn=ldn, obis=obis, attribute=attribute, cursor=cursor, limit=limit
            )
        )

    async def events_page(
        self,
        start: dt.datetime,
        end: dt.datetime,
        *,
        ldn: str | None = None,
        cursor: str | None = None,
        limit: int = 1000,
    ) -> EventPage:
        return await self._run(exports.events_page(start, end, ldn=ldn, cursor=cursor, limit=limit))

    async def create_api_token(
        self, user: str, name: str, by: Actor | None = None
    ) -> tuple[str, ApiToken]:
        token = "sac_" + secrets.token_urlsafe(32)
        now = self._clock()
        change = prov.create_api_token(user, name, token, now)
        made = await self._run(ops.audited(change, by, "create API token", user, now, name))
        return token, made

    async def api_token(self, token: str) -> ApiToken | None:
        return await self._run(prov.api_token(token, self._clock()))

    async def api_tokens(self) -> list[ApiToken]:
        return await self._run(prov.api_tokens())

    async def revoke_api_token(self, token_id: int, by: Actor | None = None) -> None:
        now = self._clock()
        change = prov.revoke_api_token(token_id, now)
        await self._run(ops.audited(change, by, "revoke API token", f"#{token_id}", now))
