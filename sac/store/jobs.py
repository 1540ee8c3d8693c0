"""Jobs: one command (kind, parameters) for many meters, picked by the meter list's filter or
by a list of LDNs, queued chunk by chunk and followed as a whole.

A job is created ``running`` with the number of meters it selects (``planned``); its
commands are then queued a chunk at a time, each chunk one transaction (keyset by meter id:
the job row keeps the last meter id queued), each command logged like any other ("queued
by X, job N") and carrying the job's id and its expiry as the deadline (the housekeeping
expires them).  Its progress is one grouped count of its commands by state (the index
``commands_job``) and the latest failures with their meters; it is ``finished`` once queued
whole with none of its commands pending or sent.  Cancelling marks it ``cancelled`` (a chunk
under way stops: each chunk first updates the job row where it is running, so a chunk and the
cancel take turns on it) and its pending commands become cancelled, a chunk at a time.
Starting and cancelling are audited; the commands one by one are not (a job of 100,000
meters is one line of the trail, not 100,000).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from zope.interface import Interface, implementer

from sac.errors import JobStateError, UnknownJob
from sac.store.audit import audit, audited
from sac.store.commands import _log
from sac.store.meterlist import meter_filters
from sac.store.model import Actor, CommandState, MeterQuery
from sac.store.sql import BATCH_ROWS, Component, Exec, Query, Transaction, stamp, when

__all__ = [
    "CHUNK",
    "FAILURES_SHOWN",
    "IJobs",
    "Job",
    "JobFailure",
    "JobProgress",
    "JobState",
    "JobsComponent",
    "NewJob",
]

CHUNK = 1000  # meters a transaction, queuing or cancelling
FAILURES_SHOWN = 5  # the latest failures a progress report names


class JobState(StrEnum):
    RUNNING = "running"  # queuing, or its commands under way
    FINISHED = "finished"  # queued whole, none of its commands pending or sent
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job to create: ``params`` is what the operator gave (the commands carry each
    profile's checked form, ``texts``: {profile: params as stored})."""

    kind: str
    params: Mapping[str, Any]
    texts: Mapping[str, str]
    selection: str  # for people: "valve = closed, LDN starting FIO" / "1,000 LDNs (CSV)"
    source: Mapping[str, Any]  # the filter, or {"ldns": count}
    expires: dt.datetime
    planned: int
    priority: int = 0
    skipped: int = 0


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    kind: str
    params: Mapping[str, Any]
    selection: str
    source: Mapping[str, Any]
    requested_by: str
    created: dt.datetime
    expires: dt.datetime
    state: JobState
    planned: int
    queued: int
    skipped: int
    queued_at: dt.datetime | None
    finished: dt.datetime | None
    note: str | None

    @property
    def queuing(self) -> bool:
        """Its commands are still being queued."""
        return self.state is JobState.RUNNING and self.queued_at is None


@dataclass(frozen=True, slots=True)
class JobFailure:
    ldn: str
    state: CommandState  # failed or expired
    reason: str
    at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class JobProgress:
    job: Job
    counts: Mapping[CommandState, int] = field(default_factory=dict)
    failures: tuple[JobFailure, ...] = ()

    def count(self, state: CommandState) -> int:
        return self.counts.get(state, 0)

    @property
    def open(self) -> int:
        """Commands not finished: pending or sent."""
        return self.count(CommandState.PENDING) + self.count(CommandState.SENT)


_JOB_COLUMNS = (
    "id, kind, params, selection, source, requested_by, created, expires, state, planned,"
    " queued, skipped, queued_at, finished, note"
)


def _job(row: Sequence[Any]) -> Job:
    return Job(
        id=row[0],
        kind=row[1],
        params=json.loads(row[2]),
        selection=row[3],
        source=json.loads(row[4]),
        requested_by=row[5],
        created=stamp(row[6]),
        expires=stamp(row[7]),
        state=JobState(row[8]),
        planned=int(row[9]),
        queued=int(row[10]),
        skipped=int(row[11]),
        queued_at=when(row[12]),
        finished=when(row[13]),
        note=row[14],
    )


def get_job(job_id: int) -> Transaction[Job]:
    rows = yield Query(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
    if not rows:
        raise UnknownJob(job_id)
    return _job(rows[0])


def create_job(new: NewJob, by: Actor, now: dt.datetime) -> Transaction[Job]:
    """A new running job, nothing queued yet; its audit line names it."""
    rows = yield Query(
        "INSERT INTO jobs (kind, params, selection, source, requested_by, created, expires,"
        " planned, skipped) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (
            new.kind,
            json.dumps(new.params, sort_keys=True),
            new.selection,
            json.dumps(new.source, sort_keys=True),
            by.name,
            now,
            new.expires,
            new.planned,
            new.skipped,
        ),
    )
    job = yield from get_job(rows[0][0])
    params = json.dumps(new.params, sort_keys=True)
    detail = f"{new.kind} {params} to {new.selection}: {new.planned} meters"
    yield from audit(by, "start job", f"job {job.id}", detail, now)
    return job


def _params_sql(texts: Mapping[str, str]) -> tuple[str, list[Any]]:
    """The commands' params column: one text, or each profile's (the checked form may
    differ between profiles)."""
    distinct = sorted(set(texts.values()))
    if len(distinct) == 1:
        return "?", distinct
    cases = " ".join("WHEN ? THEN ?" for _ in texts)
    return f"CASE m.profile {cases} END", [v for pair in sorted(texts.items()) for v in pair]


def still_running(job_id: int) -> Transaction[bool]:
    """Whether the job is running, its row locked until the transaction ends: a chunk and a
    cancel (or two chunks) take turns on it, and a cancel stops the chunks after it."""
    count = yield Exec(
        "UPDATE jobs SET queued = queued WHERE id = ? AND state = 'running'", (job_id,)
    )
    return bool(count)


def queue_chunk(
    job: Job,
    texts: Mapping[str, str],
    priority: int,
    select: tuple[str, Sequence[Any]],
    now: dt.datetime,
) -> Transaction[int]:
    """Queue the job's commands for the meters ``select`` gives (its WHERE over meters ``m``
    and parameters, ending with its ORDER BY / LIMIT), the job's row held
    (:func:`still_running`): how many were queued."""
    params_sql, params = _params_sql(texts)
    where, values = select
    rows = yield Query(
        "INSERT INTO commands (meter_id, kind, params, requested_by, created, expires, priority,"
        f" job_id) SELECT m.id, ?, {params_sql}, ?, ?, ?, ?, ? FROM meters m {where}"
        " RETURNING id, meter_id",
        [job.kind, *params, job.requested_by, now, job.expires, priority, job.id, *values],
    )
    if not rows:
        return 0
    ids = [int(r[0]) for r in rows]
    yield Exec(
        "INSERT INTO command_log (command_id, at, state, detail)"
        " SELECT id, ?, 'pending', ? FROM commands"
        " WHERE job_id = ? AND state = 'pending' AND id BETWEEN ? AND ?",
        (now, f"queued by {job.requested_by}, job {job.id}", job.id, min(ids), max(ids)),
    )
    yield Exec(
        "UPDATE jobs SET queued = queued + ?, last_meter = ? WHERE id = ?",
        (len(rows), max(int(r[1]) for r in rows), job.id),
    )
    return len(rows)


def filter_chunk(job: Job, query: MeterQuery, limit: int) -> Transaction[tuple[str, list[Any]]]:
    """The next ``limit`` meters of a filter job: those its filter keeps after the last
    meter queued (keyset by id)."""
    rows = yield Query("SELECT last_meter FROM jobs WHERE id = ?", (job.id,))
    where, params = meter_filters(query)
    clause = " AND ".join([*where, "m.id > ?"])
    return f"WHERE {clause} ORDER BY m.id LIMIT ?", [*params, int(rows[0][0]), limit]


def queue_filter_chunk(
    job: Job, query: MeterQuery, texts: Mapping[str, str], priority: int, limit: int, now: Any
) -> Transaction[int | None]:
    """The next chunk of a filter job queued: how many, None if it is no longer running."""
    if not (yield from still_running(job.id)):
        return None
    select = yield from filter_chunk(job, query, limit)
    return (yield from queue_chunk(job, texts, priority, select, now))


def queue_ids_chunk(
    job: Job, meter_ids: Sequence[int], texts: Mapping[str, str], priority: int, now: Any
) -> Transaction[int | None]:
    """Queue the job's commands for ``meter_ids`` (a chunk of an LDN list's, resolved when
    the job started), a few hundred a statement; a meter deleted since is left out."""
    if not (yield from still_running(job.id)):
        return None
    queued = 0
    for i in range(0, len(meter_ids), BATCH_ROWS):
        part = meter_ids[i : i + BATCH_ROWS]
        select = (f"WHERE m.id IN ({', '.join('?' * len(part))})", part)
        queued += yield from queue_chunk(job, texts, priority, select, now)
    return queued


def end_queuing(job_id: int, now: dt.datetime, note: str | None) -> Transaction[None]:
    yield Exec(
        "UPDATE jobs SET queued_at = ?, note = COALESCE(?, note)"
        " WHERE id = ? AND queued_at IS NULL",
        (now, note, job_id),
    )


def resolve_ldns(ldns: Sequence[str]) -> Transaction[dict[str, tuple[int, str]]]:
    """{LDN: (meter id, profile)} of the meters among ``ldns``, a few hundred a query."""
    found: dict[str, tuple[int, str]] = {}
    for i in range(0, len(ldns), BATCH_ROWS):
        part = ldns[i : i + BATCH_ROWS]
        rows = yield Query(
            f"SELECT ldn, id, profile FROM meters WHERE ldn IN ({', '.join('?' * len(part))})",
            part,
        )
        found.update((str(ldn), (int(i), str(p))) for ldn, i, p in rows)
    return found


def selection_profiles(query: MeterQuery) -> Transaction[dict[str, int]]:
    """{profile: meters} among those the filter keeps (one grouped query)."""
    where, params = meter_filters(query)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    rows = yield Query(f"SELECT profile, count(*) FROM meters{clause} GROUP BY profile", params)
    return {str(p): int(n) for p, n in rows}


def job_progress(job_id: int, now: dt.datetime) -> Transaction[JobProgress]:
    """The job's commands counted by state (one grouped query on ``commands_job``), its
    latest failures; a running job queued whole with none open is finished now."""
    job = yield from get_job(job_id)
    rows = yield Query(
        "SELECT state, count(*) FROM commands WHERE job_id = ? GROUP BY state", (job_id,)
    )
    counts = {CommandState(s): int(n) for s, n in rows}
    failed = yield Query(
        "SELECT m.ldn, c.state, c.result, c.finished FROM commands c"
        " JOIN meters m ON m.id = c.meter_id"
        " WHERE c.job_id = ? AND c.state IN ('failed', 'expired')"
        " ORDER BY c.finished DESC, c.id DESC LIMIT ?",
        (job_id, FAILURES_SHOWN),
    )
    failures = tuple(
        JobFailure(ldn, CommandState(s), result or _DEFAULT_REASON[s], when(at))
        for ldn, s, result, at in failed
    )
    progress = JobProgress(job, counts, failures)
    if job.queuing or job.state is not JobState.RUNNING or progress.open:
        return progress
    yield Exec(
        "UPDATE jobs SET state = 'finished', finished = ? WHERE id = ? AND state = 'running'",
        (now, job_id),
    )
    return JobProgress((yield from get_job(job_id)), counts, failures)


_DEFAULT_REASON = {"failed": "failed", "expired": "past its deadline: the meter did not call"}


def jobs_page(before: int | None, limit: int) -> Transaction[list[Job]]:
    """Jobs, newest first; ``before``: ids below it (the next page)."""
    where, params = ("WHERE id < ? ", [before]) if before is not None else ("", [])
    rows = yield Query(
        f"SELECT {_JOB_COLUMNS} FROM jobs {where}ORDER BY id DESC LIMIT ?", [*params, limit]
    )
    return [_job(row) for row in rows]


def jobs_summaries(
    before: int | None, limit: int, now: dt.datetime
) -> Transaction[list[JobProgress]]:
    """A page of jobs, newest first, each with its commands counted by state (one grouped
    query for the page); those found done are finished now."""
    jobs = yield from jobs_page(before, limit)
    if not jobs:
        return []
    ids = [job.id for job in jobs]
    rows = yield Query(
        "SELECT job_id, state, count(*) FROM commands"
        f" WHERE job_id IN ({', '.join('?' * len(ids))}) GROUP BY job_id, state",
        ids,
    )
    counts: dict[int, dict[CommandState, int]] = {i: {} for i in ids}
    for job_id, state, n in rows:
        counts[int(job_id)][CommandState(state)] = int(n)
    out = [JobProgress(job, counts[job.id]) for job in jobs]
    done = [
        p.job.id
        for p in out
        if p.job.state is JobState.RUNNING and not p.job.queuing and not p.open
    ]
    if not done:
        return out
    yield Exec(
        "UPDATE jobs SET state = 'finished', finished = ?"
        f" WHERE state = 'running' AND id IN ({', '.join('?' * len(done))})",
        [now, *done],
    )
    jobs = yield from jobs_page(before, limit)
    return [JobProgress(job, counts.get(job.id, {})) for job in jobs]


def mark_cancelled(job_id: int, now: dt.datetime) -> Transaction[Job]:
    count = yield Exec(
        "UPDATE jobs SET state = 'cancelled', finished = ? WHERE id = ? AND state = 'running'",
        (now, job_id),
    )
    job = yield from get_job(job_id)
    if not count:
        raise JobStateError(f"job {job_id} is {job.state.value}: it cannot be cancelled")
    return job


def cancel_chunk(job_id: int, by: str, now: dt.datetime, limit: int) -> Transaction[int]:
    """Up to ``limit`` of the job's pending commands cancelled (and logged); how many."""
    rows = yield Query(
        "SELECT id FROM commands WHERE job_id = ? AND state = 'pending' ORDER BY id LIMIT ?",
        (job_id, limit),
    )
    cancelled: list[int] = []
    for i in range(0, len(rows), BATCH_ROWS):
        part = [r[0] for r in rows[i : i + BATCH_ROWS]]
        done = yield Query(
            "UPDATE commands SET state = 'cancelled', finished = ?"
            f" WHERE id IN ({', '.join('?' * len(part))}) AND state = 'pending' RETURNING id",
            [now, *part],
        )
        cancelled += [r[0] for r in done]
    yield from _log(cancelled, CommandState.CANCELLED, now, f"by {by}, job {job_id} cancelled")
    return len(rows)


class IJobs(Interface):
    async def create(new: NewJob, by: Actor) -> Job:
        """A new running job (nothing queued yet), audited."""

    async def get(job_id: int) -> Job:
        """A job; UnknownJob if none."""

    async def page(before: int | None = None, limit: int = 50) -> list[Job]:
        """Jobs, newest first."""

    async def summaries(before: int | None = None, limit: int = 50) -> list[JobProgress]:
        """Jobs, newest first, with their commands counted by state (no failures)."""

    async def resolve(ldns: Sequence[str]) -> dict[str, tuple[int, str]]:
        """{LDN: (meter id, profile)} of the meters among ``ldns`` (one transaction)."""

    async def profiles(query: MeterQuery) -> dict[str, int]:
        """{profile: meters} of those a filter keeps."""

    async def queue_filter(
        job: Job, query: MeterQuery, texts: Mapping[str, str], priority: int, limit: int
    ) -> int | None:
        """The next chunk of a filter job queued; how many (None: the job was cancelled)."""

    async def queue_ids(
        job: Job, meter_ids: Sequence[int], texts: Mapping[str, str], priority: int
    ) -> int | None:
        """A chunk of an LDN list job queued; how many (None: the job was cancelled)."""

    async def end_queuing(job_id: int, note: str | None = None) -> None:
        """The job's commands are all queued (or queuing stopped, ``note`` says why)."""

    async def progress(job_id: int) -> JobProgress:
        """Counts by state and the latest failures (a job found done is finished)."""

    async def cancel(job_id: int, by: Actor, chunk: int = CHUNK) -> Job:
        """Cancel a running job and its pending commands (a chunk a transaction), audited;
        JobStateError if it is not running."""


@implementer(IJobs)
class JobsComponent(Component):
    async def create(self, new: NewJob, by: Actor) -> Job:
        return await self.db.run(create_job(new, by, self.db.now()))

    async def get(self, job_id: int) -> Job:
        return await self.db.run(get_job(job_id))

    async def page(self, before: int | None = None, limit: int = 50) -> list[Job]:
        return await self.db.run(jobs_page(before, limit))

    async def summaries(self, before: int | None = None, limit: int = 50) -> list[JobProgress]:
        return await self.db.run(jobs_summaries(before, limit, self.db.now()))

    async def resolve(self, ldns: Sequence[str]) -> dict[str, tuple[int, str]]:
        return await self.db.run(resolve_ldns(ldns))

    async def profiles(self, query: MeterQuery) -> dict[str, int]:
        return await self.db.run(selection_profiles(query))

    async def queue_filter(
        self, job: Job, query: MeterQuery, texts: Mapping[str, str], priority: int, limit: int
    ) -> int | None:
        return await self.db.run(
            queue_filter_chunk(job, query, texts, priority, limit, self.db.now())
        )

    async def queue_ids(
        self, job: Job, meter_ids: Sequence[int], texts: Mapping[str, str], priority: int
    ) -> int | None:
        return await self.db.run(queue_ids_chunk(job, meter_ids, texts, priority, self.db.now()))

    async def end_queuing(self, job_id: int, note: str | None = None) -> None:
        await self.db.run(end_queuing(job_id, self.db.now(), note))

    async def progress(self, job_id: int) -> JobProgress:
        return await self.db.run(job_progress(job_id, self.db.now()))

    async def cancel(self, job_id: int, by: Actor, chunk: int = CHUNK) -> Job:
        now = self.db.now()
        job = await self.db.run(
            audited(mark_cancelled(job_id, now), by, "cancel job", f"job {job_id}", now)
        )
        while await self.db.run(cancel_chunk(job_id, by.name, self.db.now(), chunk)):
            pass  # each chunk its own transaction: the reactor serves others between them
        return job
