"""Jobs in JSON, declared once (msgspec): what a client sends to start one (:class:`JobIn`),
what the API and the job page's live view answer (:class:`JobOut`), and their words in the
OpenAPI document (:func:`job_schemas`, :func:`job_paths`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Annotated, Any

import msgspec

from sac.services.jobs import MAX_EXPIRY, MAX_LDNS
from sac.store import CommandState, JobProgress

__all__ = [
    "JobFailureOut",
    "JobFilterIn",
    "JobIn",
    "JobOut",
    "JobsOut",
    "job_out",
    "job_paths",
    "job_schemas",
]

STATES = tuple(s.value for s in CommandState)


def _doc(text: str, **schema: Any) -> msgspec.Meta:
    return msgspec.Meta(description=text, extra_json_schema=schema or None)


class JobFilterIn(msgspec.Struct, forbid_unknown_fields=True):
    """The meter list's filter: the meters it keeps (all when empty)."""

    state: Annotated[str | None, _doc("active or disabled")] = None
    search: Annotated[str, msgspec.Meta(max_length=32, description="LDN or PDR prefix")] | None = (
        None
    )
    valve: (
        Annotated[int, msgspec.Meta(ge=0, le=2, description="0 closed, 1 open, 2 ready")] | None
    ) = None
    alarms: Annotated[bool, _doc("only meters with an open alarm or a diagnostic")] = False
    unseen_since: Annotated[
        str | None, _doc("only meters not heard since (ISO-8601 with offset)", format="date-time")
    ] = None


class JobIn(msgspec.Struct, forbid_unknown_fields=True):
    """A job: one command for the meters of ``filter`` or of ``ldns`` (one of them)."""

    kind: Annotated[str, _doc("the command's kind, e.g. valve-close, sync-clock")]
    params: Annotated[dict[str, Any], _doc("the command's parameters, checked per profile")] = {}
    expires: Annotated[
        str | None,
        _doc(
            f"the commands' deadline, ISO-8601 with offset, within {MAX_EXPIRY.days} days;"
            " default: in 7 days",
            format="date-time",
        ),
    ] = None
    filter: JobFilterIn | None = None
    ldns: Annotated[list[str], msgspec.Meta(max_length=MAX_LDNS)] | None = None
    skip_unknown: Annotated[bool, _doc("queue the known LDNs when some are unknown")] = False


class JobFailureOut(msgspec.Struct):
    ldn: str
    state: Annotated[str, _doc("failed or expired")]
    reason: str
    at: Annotated[str | None, _doc("when it ended", format="date-time")]


class JobOut(msgspec.Struct):
    """A job and its progress: its commands counted by state."""

    id: int
    kind: str
    params: dict[str, Any]
    selection: Annotated[str, _doc("the meters it is for, in words")]
    filter: Annotated[dict[str, Any] | None, _doc("the filter it was started with")]
    requested_by: str
    created: Annotated[str, _doc("UTC, ISO-8601", format="date-time")]
    expires: Annotated[str, _doc("the commands' deadline", format="date-time")]
    state: Annotated[str, _doc("running, finished or cancelled")]
    queuing: Annotated[bool, _doc("its commands are still being queued")]
    planned: Annotated[int, _doc("meters selected when it started")]
    queued: Annotated[int, _doc("commands queued so far")]
    skipped: Annotated[int, _doc("unknown LDNs left out")]
    counts: Annotated[dict[str, int], _doc(f"commands by state: {', '.join(STATES)}")]
    failures: Annotated[list[JobFailureOut], _doc("the latest failed or expired, newest first")]
    note: str | None = None
    finished: Annotated[str | None, _doc("when it finished or was cancelled")] = None


class JobsOut(msgspec.Struct):
    jobs: list[JobOut]
    next: Annotated[int | None, _doc("pass as before= for the next page")] = None


def _time(value: dt.datetime | None) -> str | None:
    return None if value is None else value.astimezone(dt.UTC).isoformat()


def job_out(progress: JobProgress) -> JobOut:
    job = progress.job
    return JobOut(
        id=job.id,
        kind=job.kind,
        params=dict(job.params),
        selection=job.selection,
        filter=None if "ldns" in job.source else dict(job.source),
        requested_by=job.requested_by,
        created=_time(job.created) or "",
        expires=_time(job.expires) or "",
        state=job.state.value,
        queuing=job.queuing,
        planned=job.planned,
        queued=job.queued,
        skipped=job.skipped,
        counts={s: progress.counts.get(CommandState(s), 0) for s in STATES},
        failures=[
            JobFailureOut(f.ldn, f.state.value, f.reason, _time(f.at)) for f in progress.failures
        ],
        note=job.note,
        finished=_time(job.finished),
    )


def job_schemas() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        [JobIn, JobOut, JobsOut], ref_template="#/components/schemas/{name}"
    )
    return dict(components)


def job_paths(api: str, op: Callable[..., dict[str, Any]], answer: Callable[..., Any]) -> Any:
    """The jobs' operations (``op`` and ``answer``: the document's builders)."""
    job_id = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "integer"}}
    before = {"name": "before", "in": "query", "schema": {"type": "integer"}}
    return {
        f"{api}/jobs": {
            "get": op(
                "Jobs, newest first, with their progress",
                {"200": answer("a page of jobs", "JobsOut")},
                errors=("400",),
                params=[before, {"name": "limit", "in": "query", "schema": {"type": "integer"}}],
            ),
            "post": op(
                "Start a job: one command for the meters of a filter or a list of LDNs"
                " (operators; audited).  Checked whole first: a bad parameter is named (422),"
                " unknown LDNs are listed (422, code unknown_meters) unless skip_unknown;"
                " then nothing is queued.  Answers at once; the commands are queued after.",
                {"201": answer("the job, queuing", "JobOut")},
                errors=("400", "413", "415", "422"),
                body="JobIn",
            ),
        },
        f"{api}/jobs/{{job_id}}": {
            "get": op(
                "A job's progress: its commands by state, the latest failures",
                {"200": answer("the job", "JobOut")},
                errors=("404",),
                params=[job_id],
            )
        },
        f"{api}/jobs/{{job_id}}/cancel": {
            "post": op(
                "Cancel a running job: its pending commands are cancelled (operators; audited)",
                {"200": answer("the job, cancelled", "JobOut")},
                errors=("404", "409"),
                params=[job_id],
            )
        },
    }
