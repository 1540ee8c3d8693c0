"""The JSON API's jobs (mounted at ``/api/v1/jobs`` beside :mod:`sac.web.api`, with its
tokens and roles): start one (operators), list them, follow one, cancel one.

A start is checked whole before anything is queued (:mod:`sac.services.jobs`): a bad field
is a 422 naming it, unknown LDNs a 422 ``unknown_meters`` listing them by their position
(the first 100) unless ``skip_unknown``.  The job is answered at once (201), queuing; its
progress is ``GET /api/v1/jobs/{id}``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
from klein import Klein

from sac.services.commands import CommandError
from sac.services.jobs import JobRequest
from sac.store import ApiToken, MeterQuery, MeterState, Role, UnknownMeters
from sac.web.api import JsonApi, api
from sac.web.api_input import invalid, problem, query_whole, read_body, read_query
from sac.web.errors import ApiError, json_answer
from sac.web.errors import install as install_errors
from sac.web.schema_jobs import JobFilterIn, JobIn, JobsOut, job_out

__all__ = ["DEFAULT_EXPIRY", "JobsApi", "job_request"]

DEFAULT_EXPIRY = dt.timedelta(days=7)


def _refused(field: str | None, message: str) -> ApiError:
    return invalid([problem(None, field, message)], what="request")


def _time(text: str, field: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise _refused(field, f"{text!r} is not an ISO-8601 date-time") from None
    if value.tzinfo is None:
        raise _refused(field, "needs a UTC offset (e.g. +01:00 or Z)")
    return value


def _query(given: JobFilterIn) -> MeterQuery:
    state = None
    if given.state is not None:
        try:
            state = MeterState(given.state)
        except ValueError:
            raise _refused("filter.state", "is active or disabled") from None
    unseen = _time(given.unseen_since, "filter.unseen_since") if given.unseen_since else None
    return MeterQuery(
        state=state,
        search=given.search or None,
        valve=given.valve,
        alarms=given.alarms,
        unseen_since=unseen,
    )


def job_request(body: Any, now: dt.datetime) -> JobRequest:
    """A start's body checked for its shape (422 naming the field); the service checks
    the rest."""
    try:
        given = msgspec.convert(body, JobIn)
    except msgspec.ValidationError as exc:
        text = str(exc)
        field = text.partition("`$.")[2].partition("`")[0] or None
        raise _refused(field, text) from None
    if (given.filter is None) == (given.ldns is None):
        raise _refused("filter", "give either a filter (an empty one: every meter) or ldns")
    expires = _time(given.expires, "expires") if given.expires else now + DEFAULT_EXPIRY
    return JobRequest(
        kind=given.kind,
        params=given.params,
        expires=expires,
        query=_query(given.filter) if given.filter is not None else None,
        ldns=given.ldns,
        skip_unknown=given.skip_unknown,
        label="API",
    )


class JobsApi(JsonApi):
    """The jobs' routes; the tokens and roles of :class:`sac.web.api.JsonApi`."""

    app = Klein()

    async def _answer(self, request: Any, status: int, job_id: int) -> bytes:
        progress = await self.store.jobs.progress(job_id)
        return json_answer(request, status, msgspec.to_builtins(job_out(progress)))

    @app.route("/", methods=["GET"])
    @api(Role.VIEWER)
    async def api_jobs(self, request: Any, token: ApiToken) -> bytes:
        query = read_query(request, ("before", "limit"))
        limit = query_whole(query, "limit", 50, 1, 200)
        before = query_whole(query, "before", 0, 1, 2**62) if "before" in query else None
        found = await self.store.jobs.summaries(before, limit)
        page = JobsOut(
            [job_out(p) for p in found], found[-1].job.id if len(found) == limit else None
        )
        return json_answer(request, 200, msgspec.to_builtins(page))

    @app.route("/", methods=["POST"])
    @api(Role.OPERATOR)
    async def api_start_job(self, request: Any, token: ApiToken) -> bytes:
        wanted = job_request(read_body(request), self.web.now())
        try:
            job = await self.web.jobs.start(wanted, self._api_actor(request, token))
        except CommandError as exc:
            raise _refused(exc.field, str(exc)) from None
        except UnknownMeters as exc:
            positions = {ldn: i for i, ldn in reversed(list(enumerate(wanted.ldns or ())))}
            items = [problem(positions.get(ldn), "ldns", f"no meter {ldn}") for ldn in exc.ldns]
            raise ApiError(422, "unknown_meters", str(exc), items=items) from None
        return await self._answer(request, 201, job.id)

    @app.route("/<int:job_id>", methods=["GET"])
    @api(Role.VIEWER)
    async def api_job(self, request: Any, token: ApiToken, job_id: int) -> bytes:
        return await self._answer(request, 200, job_id)

    @app.route("/<int:job_id>/cancel", methods=["POST"])
    @api(Role.OPERATOR)
    async def api_cancel_job(self, request: Any, token: ApiToken, job_id: int) -> bytes:
        await self.store.jobs.cancel(job_id, self._api_actor(request, token))
        return await self._answer(request, 200, job_id)

    install_errors(app, lambda api: api.web.render, lambda request: True)
