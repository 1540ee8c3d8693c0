"""The SOAP API's jobs (:mod:`sac.web.soap` serves them beside the ERP operations): one
command for many meters, started, followed, listed and cancelled.

* ``StartJob`` (operators): a command kind, its parameters (a JSON object, checked for each
  profile among the meters), a deadline, and the meters -- a ``filter`` (the meter list's)
  or ``ldns``; ``skipUnknown`` queues the known LDNs when some are unknown.  Checked whole
  first: a refused command parameter is ``Client.InvalidParameter`` naming the field (as
  for ``RequestCommand``), a job field that is not one ``Client.BadInput``, unknown LDNs
  ``Client.UnknownMeters`` (the first 100 named); then nothing is queued.  The job comes
  back at once, its commands queued after.
* ``GetJob`` (its progress: counts by state, the latest failures), ``ListJobs`` (newest
  first, paged by id) and ``CancelJob`` (operators: its pending commands are cancelled;
  ``Client.JobState`` when it is not running).

Sign-in and the audit line are every call's (:class:`sac.web.soap_call.Call`).
"""

from __future__ import annotations

import json
from typing import Any

from spyne import Array, Boolean, DateTime, Integer, Integer64, Unicode, rpc

from sac.services.jobs import MAX_EXPIRY, JobRequest
from sac.store import Actor, JobProgress, MeterQuery, MeterState, Role
from sac.web.soap_call import Call
from sac.web.soap_types import (
    _COMMON,
    BadInputFault,
    InvalidParameterFault,
    JobStateFault,
    UnknownJobFault,
    UnknownMetersFault,
    _optional,
    _required,
    _Type,
)

__all__ = ["CancelJob", "GetJob", "ListJobs", "StartJob"]

MAX_JOBS_PAGE = 200


class JobFilter(_Type):
    """The meter list's filter: the meters it keeps (every meter when all are absent)."""

    _type_info = [
        ("state", _optional(Unicode(values=["active", "disabled"]), "active or disabled")),
        ("search", _optional(Unicode(max_len=32), "LDN or PDR prefix")),
        ("valve", _optional(Integer, "0 closed, 1 open, 2 closed with opening enabled")),
        ("alarms", _optional(Boolean, "only meters with an open alarm or a diagnostic")),
        ("unseenSince", _optional(DateTime, "only meters not heard since (with offset)")),
    ]


STATES = ("pending", "sent", "done", "failed", "expired", "cancelled")


class JobCounts(_Type):
    _type_info = [(state, _required(Integer64, f"commands {state}")) for state in STATES]


class JobFailureInfo(_Type):
    _type_info = [
        ("ldn", _required(Unicode, "the meter")),
        ("state", _required(Unicode, "failed or expired")),
        ("reason", _required(Unicode, "what the meter answered, or why")),
        ("at", _optional(DateTime, "when it ended")),
    ]


class JobInfo(_Type):
    _type_info = [
        ("id", _required(Integer64, "the job's id")),
        ("kind", _required(Unicode, "the command's kind")),
        ("params", _required(Unicode, "its parameters, a JSON object")),
        ("selection", _required(Unicode, "the meters, in words")),
        ("requestedBy", _required(Unicode, "who started it")),
        ("created", _required(DateTime, "when")),
        ("expires", _required(DateTime, "the commands' deadline")),
        ("state", _required(Unicode, "running, finished or cancelled")),
        ("queuing", _required(Boolean, "its commands are still being queued")),
        ("planned", _required(Integer64, "meters selected when it started")),
        ("queued", _required(Integer64, "commands queued so far")),
        ("skipped", _required(Integer64, "unknown LDNs left out")),
        ("counts", _required(JobCounts, "its commands by state")),
        ("failures", _required(Array(JobFailureInfo), "the latest failed or expired")),
        ("note", _optional(Unicode, "why queuing stopped early, if it did")),
        ("finished", _optional(DateTime, "when it finished or was cancelled")),
    ]


class JobPage(_Type):
    _type_info = [
        ("jobs", _required(Array(JobInfo), "newest first")),
        ("next", _optional(Integer64, "pass as 'before' for the next page; absent: the last")),
    ]


def _job_info(progress: JobProgress) -> JobInfo:
    job = progress.job
    counts = {s.value: n for s, n in progress.counts.items()}
    return JobInfo(
        id=job.id,
        kind=job.kind,
        params=json.dumps(dict(job.params), sort_keys=True),
        selection=job.selection,
        requestedBy=job.requested_by,
        created=job.created,
        expires=job.expires,
        state=job.state.value,
        queuing=job.queuing,
        planned=job.planned,
        queued=job.queued,
        skipped=job.skipped,
        counts=JobCounts(**{state: counts.get(state, 0) for state in STATES}),
        failures=[JobFailureInfo(f.ldn, f.state.value, f.reason, f.at) for f in progress.failures],
        note=job.note,
        finished=job.finished,
    )


def _request(kind: str, params: Any, expires: Any, given: Any, ldns: Any, skip: Any) -> JobRequest:
    try:
        values = json.loads(params) if params else {}
    except ValueError:
        raise BadInputFault("params: is not a JSON object") from None
    if not isinstance(values, dict):
        raise BadInputFault("params: is not a JSON object")
    if expires is None or expires.tzinfo is None:
        raise BadInputFault(
            f"expires: give the deadline with its UTC offset (at most {MAX_EXPIRY.days} days)"
        )
    if (given is None) == (ldns is None):
        raise BadInputFault("filter: give either a filter (an empty one: every meter) or ldns")
    query = None
    if given is not None:
        if given.unseenSince is not None and given.unseenSince.tzinfo is None:
            raise BadInputFault("filter.unseenSince: give it with its UTC offset")
        query = MeterQuery(
            state=MeterState(given.state) if given.state else None,
            search=given.search or None,
            valve=given.valve,
            alarms=bool(given.alarms),
            unseen_since=given.unseenSince,
        )
    return JobRequest(
        kind, values, expires, query=query, ldns=ldns, skip_unknown=bool(skip), label="SOAP"
    )


# the operations, each an rpc of the one ERP service (sac.web.soap.ErpService takes them in:
# one WSDL service and port, as ERP clients know it)


@rpc(
    _required(Unicode, "the command's kind, e.g. valve-close, sync-clock"),
    Unicode(doc="its parameters, a JSON object (absent: none)"),
    _required(DateTime, f"the commands' deadline, with its offset, within {MAX_EXPIRY.days} days"),
    JobFilter.customize(doc="the meters of the meter list's filter; or give ldns"),
    Array(Unicode, doc="the meters by LDN; or give filter"),
    Boolean(doc="queue the known LDNs when some are unknown (default: refuse the job)"),
    _returns=JobInfo,
    _throws=[*_COMMON, BadInputFault, InvalidParameterFault, UnknownMetersFault],
)
async def StartJob(
    ctx: Any, kind: str, params: Any, expires: Any, filter: Any, ldns: Any, skipUnknown: Any
) -> JobInfo:
    """Start a job (operators); follow it with GetJob."""
    call = Call(ctx)

    async def work(actor: Actor) -> JobInfo:
        wanted = _request(kind, params, expires, filter, ldns, skipUnknown)
        job = await call.web.jobs.start(wanted, actor)
        return _job_info(await call.web.store.jobs.progress(job.id))

    return await call.run(Role.OPERATOR, None, kind, work)


@rpc(
    _required(Integer64, "the id StartJob gave"),
    _returns=JobInfo,
    _throws=[*_COMMON, UnknownJobFault],
)
async def GetJob(ctx: Any, id: int) -> JobInfo:
    """A job's progress: its commands by state, the latest failures."""
    call = Call(ctx)

    async def work(actor: Actor) -> JobInfo:
        return _job_info(await call.web.store.jobs.progress(id))

    return await call.run(Role.VIEWER, f"job {id}", None, work)


@rpc(
    Integer64(doc="the 'next' of the page before"),
    Integer(doc=f"jobs a page, 1 to {MAX_JOBS_PAGE} (50)"),
    _returns=JobPage,
    _throws=[*_COMMON, BadInputFault],
)
async def ListJobs(ctx: Any, before: Any, limit: Any) -> JobPage:
    """Jobs, newest first, with their counts (no failures: GetJob has them)."""
    call = Call(ctx)

    async def work(actor: Actor) -> JobPage:
        size = 50 if limit is None else limit
        if not 1 <= size <= MAX_JOBS_PAGE:
            raise BadInputFault(f"limit: 1 to {MAX_JOBS_PAGE}")
        found = await call.web.store.jobs.summaries(before, size)
        last = found[-1].job.id if len(found) == size else None
        return JobPage(jobs=[_job_info(p) for p in found], next=last)

    return await call.run(Role.VIEWER, None, None, work)


@rpc(
    _required(Integer64, "the job's id"),
    _returns=JobInfo,
    _throws=[*_COMMON, UnknownJobFault, JobStateFault],
)
async def CancelJob(ctx: Any, id: int) -> JobInfo:
    """Cancel a running job (operators): its commands not yet sent are cancelled."""
    call = Call(ctx)

    async def work(actor: Actor) -> JobInfo:
        await call.web.store.jobs.cancel(id, actor)
        return _job_info(await call.web.store.jobs.progress(id))

    return await call.run(Role.OPERATOR, f"job {id}", None, work)
