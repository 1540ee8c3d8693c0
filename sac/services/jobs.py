"""Starting jobs: one command for many meters (:mod:`sac.store.jobs`), checked first, then
queued chunk by chunk in the background.

A start is checked whole before anything is written: the deadline; the selection (a filter
that keeps no meter is refused; an LDN list's unknown LDNs refuse the job, all of them
listed, unless the caller asks to skip them); and the parameters, once for each profile
among the selected meters (:func:`sac.services.commands.validate`: a CommandError names the
field).  The job is then created and its id given back at once; its commands are queued
after, a chunk (:data:`~sac.store.jobs.CHUNK` meters) a transaction, the reactor serving
other requests between chunks, while the job's page shows "queuing n of N".

Why in the background: queuing 100,000 commands (with their log lines) takes tens of seconds
on SQLite; a request that waited that long would outlive the browser's patience and a SOAP
client's timeout, and would hold one HTTP connection for nothing.  What can be refused is
refused in the request (nothing queued); what is left cannot fail for the caller's input.
An LDN list's meters are resolved in the request (5,000 LDNs a transaction, a few hundred a
statement) and kept in memory for the background: a SAC restarted while queuing leaves the
job queued in part (its page says how many; cancel it and start again for the rest).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger

from sac.errors import SacError, UnknownMeters
from sac.profiles import ProfileRegistry
from sac.services.commands import PRIORITY, CommandError, Kind, validate
from sac.store import Actor, Job, MeterQuery, NewJob
from sac.store.jobs import CHUNK

__all__ = ["MAX_EXPIRY", "MAX_LDNS", "JobRequest", "Jobs", "describe", "shown"]

MAX_EXPIRY = dt.timedelta(days=90)  # the furthest deadline a job may have
MAX_LDNS = 1_000_000  # LDNs a list job may name
RESOLVE = 5000  # LDNs resolved a transaction


@dataclass(frozen=True, slots=True)
class JobRequest:
    """What a caller asks: a kind and its parameters for the meters ``query`` keeps, or for
    ``ldns``; ``skip_unknown``: queue the known LDNs when some are unknown."""

    kind: str
    params: Mapping[str, Any]
    expires: dt.datetime
    query: MeterQuery | None = None
    ldns: Sequence[str] | None = None
    skip_unknown: bool = False
    label: str = ""  # where an LDN list came from, for people ("CSV plan.csv")


_VALVES = {0: "closed", 1: "open", 2: "ready to open"}


def describe(query: MeterQuery) -> str:
    """A filter in words, for the job's page."""
    parts = []
    if query.state is not None:
        parts.append(f"state {query.state.value}")
    if query.search:
        parts.append(f"LDN or PDR starting {query.search}")
    if query.valve is not None:
        parts.append(f"valve {_VALVES.get(query.valve, query.valve)}")
    if query.alarms:
        parts.append("with alarms")
    if query.unseen_since is not None:
        parts.append(f"not heard since {query.unseen_since.isoformat(timespec='minutes')}")
    return "meters: " + (", ".join(parts) or "all")


def source_of(query: MeterQuery) -> dict[str, Any]:
    """A filter as JSON (the job keeps it; the API shows it)."""
    out: dict[str, Any] = {
        "state": query.state.value if query.state is not None else None,
        "search": query.search,
        "valve": query.valve,
        "alarms": query.alarms,
        "unseen_since": query.unseen_since.isoformat() if query.unseen_since else None,
    }
    return {k: v for k, v in out.items() if v not in (None, False)}


HIDDEN = "(hidden)"


def shown(checked: Mapping[str, Any]) -> dict[str, Any]:
    """A command's checked parameters as the job keeps and shows them (its page, the API,
    the audit line): a value its kind marks secret (``"text": "(hidden)"``, a PIN) is
    hidden; only the commands carry it, to the meter."""
    out = dict(checked)
    if out.get("text") == HIDDEN and "value" in out:
        out["value"] = HIDDEN
    return out


class Jobs:
    """Starts jobs and queues them in the background (``running``: job id -> its queuing)."""

    log = Logger()

    def __init__(
        self,
        store: Any,
        registry: ProfileRegistry,
        *,
        now: Callable[[], dt.datetime],
        reactor: Any = None,
        chunk: int = CHUNK,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.store = store
        self.registry = registry
        self.now = now
        self.reactor = reactor
        self.chunk = chunk
        self.running: dict[int, Deferred[None]] = {}

    async def start(self, request: JobRequest, by: Actor) -> Job:
        """Check the request whole, create the job and start queuing it; the job at once.
        CommandError (a field at fault), UnknownMeters (unknown LDNs): nothing queued."""
        now = self.now()
        if request.expires.tzinfo is None:
            raise CommandError("expires", "needs a UTC offset (e.g. +01:00 or Z)")
        if not now < request.expires <= now + MAX_EXPIRY:
            raise CommandError("expires", f"must be in the next {MAX_EXPIRY.days} days")
        if request.ldns is not None:
            return await self._start_list(request, by, now)
        query = request.query or MeterQuery()
        profiles = await self.store.jobs.profiles(query)
        if not profiles:
            raise CommandError("filter", "keeps no meter")
        texts = self._check(request, profiles, now)
        new = self._new(request, texts, describe(query), source_of(query), sum(profiles.values()))
        job: Job = await self.store.jobs.create(new, by)
        self._background(job.id, self._queue_filter(job, query, texts, new.priority))
        return job

    async def _start_list(self, request: JobRequest, by: Actor, now: dt.datetime) -> Job:
        assert request.ldns is not None
        ldns = list(dict.fromkeys(request.ldns))  # each once, in the order given
        if not ldns:
            raise CommandError("ldns", "names no meter")
        if len(ldns) > MAX_LDNS:
            raise CommandError("ldns", f"at most {MAX_LDNS:,} LDNs a job")
        found: dict[str, tuple[int, str]] = {}
        for i in range(0, len(ldns), RESOLVE):
            found.update(await self.store.jobs.resolve(ldns[i : i + RESOLVE]))
        unknown = [ldn for ldn in ldns if ldn not in found]
        if unknown and not request.skip_unknown:
            raise UnknownMeters(unknown, len(unknown))
        if not found:
            raise CommandError("ldns", "none of them is a meter's LDN")
        profiles: dict[str, int] = {}
        for _, profile in found.values():
            profiles[profile] = profiles.get(profile, 0) + 1
        texts = self._check(request, profiles, now)
        label = request.label or "a list"
        selection = f"{len(ldns):,} LDNs ({label})"
        if unknown:
            selection += f", {len(unknown):,} unknown skipped"
        source = {"ldns": len(ldns), "skipped": len(unknown)}
        new = self._new(request, texts, selection, source, len(found), len(unknown))
        job: Job = await self.store.jobs.create(new, by)
        ids = sorted(meter_id for meter_id, _ in found.values())
        self._background(job.id, self._queue_ids(job, ids, texts, new.priority))
        return job

    def _check(
        self, request: JobRequest, profiles: Mapping[str, int], now: dt.datetime
    ) -> dict[str, str]:
        """{profile: the parameters as its commands store them}, checked once a profile."""
        texts = {}
        for name in sorted(profiles):
            try:
                profile = self.registry.match(assigned=name)
            except (KeyError, SacError):
                raise CommandError(
                    "profile",
                    f"{profiles[name]} meters have profile {name!r}, which this SAC does not know",
                ) from None
            checked = validate(request.kind, request.params, profile, now)
            texts[name] = json.dumps(checked, sort_keys=True)
        return texts

    def _new(
        self,
        request: JobRequest,
        texts: Mapping[str, str],
        selection: str,
        source: Mapping[str, Any],
        planned: int,
        skipped: int = 0,
    ) -> NewJob:
        return NewJob(
            kind=request.kind,
            params=shown(json.loads(next(iter(texts.values())))),
            texts=texts,
            selection=selection,
            source=source,
            expires=request.expires,
            planned=planned,
            priority=PRIORITY.get(Kind(request.kind), 0),
            skipped=skipped,
        )

    def _background(self, job_id: int, work: Any) -> None:
        done = Deferred.fromCoroutine(work)
        self.running[job_id] = done
        done.addBoth(lambda result: self.running.pop(job_id, None) and None)

    async def wait(self, job_id: int) -> None:
        """Until the job's commands are all queued (at once if they are)."""
        running = self.running.get(job_id)
        if running is None:
            return
        waiter: Deferred[None] = Deferred()

        def tell(result: Any) -> Any:
            waiter.callback(None)
            return result

        running.addBoth(tell)
        await waiter

    async def _queue_filter(
        self, job: Job, query: MeterQuery, texts: Mapping[str, str], priority: int
    ) -> None:
        async def chunks() -> bool:
            count = await self.store.jobs.queue_filter(job, query, texts, priority, self.chunk)
            return count is not None and count == self.chunk

        await self._queue(job, chunks)

    async def _queue_ids(
        self, job: Job, ids: list[int], texts: Mapping[str, str], priority: int
    ) -> None:
        at = 0

        async def chunks() -> bool:
            nonlocal at
            part, at = ids[at : at + self.chunk], at + self.chunk
            count = await self.store.jobs.queue_ids(job, part, texts, priority)
            return count is not None and at < len(ids)

        await self._queue(job, chunks)

    async def _queue(self, job: Job, chunk: Callable[[], Any]) -> None:
        """Chunk after chunk until ``chunk`` says there is none left; between two, a turn of
        the reactor.  A store failure stops the queuing, said on the job."""
        note = None
        try:
            while await chunk():
                await deferLater(self.reactor, 0, lambda: None)
        except Exception as exc:
            self.log.failure("job {job}: queuing stopped", job=job.id)
            note = f"queuing stopped: {exc}"
        try:
            await self.store.jobs.end_queuing(job.id, note)
        except Exception:
            self.log.failure("job {job}: its queuing's end was not recorded", job=job.id)
