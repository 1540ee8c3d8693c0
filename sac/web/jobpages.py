"""The jobs' pages (mounted at ``/jobs``): one command for many meters.

The meter list's "Apply to these meters" opens the new-job form with the list's filter
(``/jobs/new?q=...&valve=...``); the form may instead take a CSV file of LDNs (one a line,
or an ``ldn`` column).  A start is checked whole first (:mod:`sac.services.jobs`): a bad
parameter or deadline is named on the form, unknown LDNs are listed, and nothing is queued;
then the job's page (``/jobs/<id>``) follows it live (its JSON at ``/jobs/<id>.json``, polled
by sac.js), with its failures and a cancel button.  Operators start and cancel, viewers
follow; every form carries the session's CSRF token (:func:`sac.web.common.page`).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from typing import Any

import msgspec
from klein import Klein
from twisted.internet import threads

from sac.services.commands import CommandError, Kind
from sac.services.jobs import MAX_EXPIRY, MAX_LDNS, JobRequest, describe
from sac.store import MeterQuery, Role, UnknownMeters, WebSession
from sac.web.common import BadRequest, Page, arg, list_filter, page
from sac.web.errors import install as install_errors
from sac.web.errors import is_api, secure
from sac.web.schema_jobs import job_out

__all__ = ["CHOICES", "JobPages", "parse_ldns"]

# the commands the form offers as simple choices; any other kind takes JSON parameters
CHOICES = {
    Kind.VALVE_CLOSE.value: "Close the valve",
    Kind.VALVE_ENABLE_OPENING.value: "Enable opening the valve",
    Kind.SYNC_CLOCK.value: "Set the meter's clock to the SAC's",
}
TITLE = "Apply to many meters"


def parse_ldns(content: bytes) -> list[str]:
    """The LDNs of a CSV file: an ``ldn`` column when the first line names one, else the
    first field of each line; blank lines skipped.  BadRequest when it is not UTF-8 text."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadRequest("the file is not UTF-8 text: save it as CSV UTF-8") from None
    first = text.split("\n", 1)[0]
    delimiter = ";" if first.count(";") > first.count(",") else ","
    rows = csv.reader(io.StringIO(text), delimiter=delimiter)
    header = next(rows, [])
    names = [h.strip().lower() for h in header]
    column = names.index("ldn") if "ldn" in names else 0
    ldns = [] if "ldn" in names else [header[0].strip()] if header else []
    ldns += [row[column].strip() for row in rows if len(row) > column]
    return [ldn for ldn in ldns if ldn]


class JobPages:
    """The jobs' router; ``web`` is the :class:`sac.web.app.Web` it shares."""

    app = Klein()

    def __init__(self, web: Any) -> None:
        self.web = web
        self.store = web.store

    @app.route("/", methods=["GET"])
    @page(Role.VIEWER)
    async def jobs(self, request: Any, session: WebSession) -> Page:
        before_text = arg(request, "before")
        before = int(before_text) if before_text.isdigit() else None
        found = await self.store.jobs.summaries(before, 50)
        more = found[-1].job.id if len(found) == 50 else None
        rows = [job_out(p) for p in found]
        return Page("jobs.html", dict(title="Jobs", jobs=rows, more=more))

    @app.route("/new", methods=["GET"])
    @page(Role.OPERATOR)
    async def new_job(self, request: Any, session: WebSession) -> Page:
        query, fields = list_filter(request, self.web.now())
        return await self._form(query, fields, {"kind": Kind.SYNC_CLOCK.value, "days": "7"})

    async def _form(
        self,
        query: MeterQuery,
        fields: dict[str, str],
        values: dict[str, str],
        error: str = "",
        unknown: UnknownMeters | None = None,
        status: int = 200,
    ) -> Page:
        count = await self.store.meters.count(query=query)
        return Page(
            "job_new.html",
            dict(
                title=TITLE,
                filter=fields,
                selection=describe(query),
                count=count,
                choices=CHOICES,
                kinds=[k.value for k in Kind],
                settings=self._settings(),
                values=values,
                error=error,
                unknown=unknown,
                max_days=MAX_EXPIRY.days,
            ),
            status,
        )

    def _settings(self) -> list[tuple[str, str, str]]:
        """Every profile's settings, once each (key, label, how to write it): a job's meters
        may be of several profiles, each checks the value for its own."""
        seen: dict[str, tuple[str, str, str]] = {}
        for profile in self.web.registry.profiles.values():
            for setting in profile.settings:
                if setting.command == Kind.SET_SETTING.value:
                    seen.setdefault(setting.key, (setting.key, setting.label, setting.shape.hint))
        return list(seen.values())

    @app.route("/", methods=["POST"])
    @page(Role.OPERATOR)
    async def start(self, request: Any, session: WebSession) -> Page:
        now = self.web.now()
        query, fields = list_filter(request, now)
        names = ("source", "kind", "other", "params", "days", "setting", "value")
        values = {k: arg(request, k) for k in names}
        values["skip"] = arg(request, "skip_unknown")
        try:
            wanted = await self._request(request, values, query, now)
            job = await self.web.jobs.start(wanted, self.web.actor(request, session))
        except CommandError as exc:
            return await self._form(query, fields, values, str(exc), status=422)
        except UnknownMeters as exc:
            return await self._form(query, fields, values, "", exc, 422)
        return Page(redirect=f"/jobs/{job.id}")

    async def _request(
        self, request: Any, values: dict[str, str], query: MeterQuery, now: dt.datetime
    ) -> JobRequest:
        kind = values["kind"] if values["kind"] != "other" else values["other"]
        if kind in (Kind.SET_SETTING.value, Kind.READ_SETTING.value):
            params = {"setting": values["setting"]}
            if kind == Kind.SET_SETTING.value:
                params["value"] = values["value"]
            return await self._job(request, values, query, now, kind, params)
        try:
            params = (
                json.loads(values["params"]) if kind not in CHOICES and values["params"] else {}
            )
        except ValueError as exc:
            raise CommandError("params", f"is not JSON: {exc}") from None
        return await self._job(request, values, query, now, kind, params)

    async def _job(
        self,
        request: Any,
        values: dict[str, str],
        query: MeterQuery,
        now: dt.datetime,
        kind: str,
        params: dict[str, Any],
    ) -> JobRequest:
        days = values["days"]
        if not days.isdigit() or not 1 <= int(days) <= MAX_EXPIRY.days:
            raise CommandError("expires", f"give 1 to {MAX_EXPIRY.days} days")
        expires = now + dt.timedelta(days=int(days))
        if values["source"] != "csv":
            return JobRequest(kind, params, expires, query=query)
        content = (request.args.get(b"file") or [b""])[0]
        if not content:
            raise CommandError("file", "choose a CSV file of LDNs")
        if len(content) > self.web.settings.max_upload:
            raise CommandError("file", f"is larger than {self.web.settings.max_upload // 2**20} MB")
        # off-reactor: a file of up to max_upload MiB (a million LDNs) takes about a second
        ldns = await threads.deferToThread(parse_ldns, content)
        if len(ldns) > MAX_LDNS:
            raise CommandError("file", f"holds more than {MAX_LDNS:,} LDNs")
        name = arg(request, "filename") or "CSV"
        return JobRequest(
            kind, params, expires, ldns=ldns, skip_unknown=values["skip"] == "1", label=name
        )

    @app.route("/<int:job_id>", methods=["GET"])
    @page(Role.VIEWER)
    async def job(self, request: Any, session: WebSession, job_id: int) -> Page:
        progress = await self.store.jobs.progress(job_id)
        return Page("job.html", dict(title=f"Job {job_id}", p=progress, out=job_out(progress)))

    @app.route("/<int:job_id>.json", methods=["GET"])
    @page(Role.VIEWER)
    async def job_json(self, request: Any, session: WebSession, job_id: int) -> bytes:
        progress = await self.store.jobs.progress(job_id)
        secure(request)
        request.setHeader(b"Content-Type", b"application/json")
        return msgspec.json.encode(job_out(progress))

    @app.route("/<int:job_id>/cancel", methods=["POST"])
    @page(Role.OPERATOR)
    async def cancel(self, request: Any, session: WebSession, job_id: int) -> Page:
        await self.store.jobs.cancel(job_id, self.web.actor(request, session))
        return Page(redirect=f"/jobs/{job_id}")

    install_errors(app, lambda pages: pages.web.render, is_api)
