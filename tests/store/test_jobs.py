"""Jobs in the store, on every backend: chunked queuing from a filter and from LDNs, the
command log, progress counts, failures, finishing, cancelling in chunks, unknown LDNs."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import pytest_twisted

from sac.profiles import discover_profiles
from sac.services.commands import CommandError
from sac.services.jobs import JobRequest, Jobs, shown
from sac.store import (
    Actor,
    CommandState,
    JobState,
    JobStateError,
    MeterQuery,
    NewMeter,
    UnknownJob,
    UnknownMeters,
)
from sac.store.connector import Store
from tests.store.conftest import Backend
from tests.store.test_operations import Clock

REGISTRY = discover_profiles().registry
OTTO = Actor("otto", "192.0.2.8")
COUNT = 2500  # meters: three chunks of 1000, or many of a small chunk


def ldn(i: int) -> str:
    return f"JOB{i:013d}"


async def fleet(backend: Backend, count: int = COUNT) -> tuple[Store, Clock]:
    clock = Clock()
    store = backend.make(clock=clock)
    await store.open()
    meters = [NewMeter(ldn(i), pdr=f"{i:014d}", profile=REGISTRY.default) for i in range(count)]
    for i in range(0, count, 1000):
        await store.meters.add_many([(m, {}) for m in meters[i : i + 1000]])
    return store, clock


def expiry(clock: Clock, days: int = 2) -> dt.datetime:
    return clock.now + dt.timedelta(days=days)


@pytest_twisted.ensureDeferred
async def test_a_filter_job_queues_in_chunks_and_logs_each_command(backend: Backend) -> None:
    store, clock = await fleet(backend)
    jobs = Jobs(store, REGISTRY, now=clock, chunk=300)
    # the prefix JOB0000000001 keeps meters 1000..1999
    request = JobRequest("sync-clock", {}, expiry(clock), query=MeterQuery(search="JOB0000000001"))
    job = await jobs.start(request, OTTO)
    assert job.planned == 1000 and job.state is JobState.RUNNING
    await jobs.wait(job.id)
    job = await store.jobs.get(job.id)
    assert (job.queued, job.queuing) == (1000, False)
    rows = backend.raw(
        f"SELECT count(*), count(DISTINCT meter_id), min(expires) IS NOT NULL FROM commands"
        f" WHERE job_id = {job.id} AND kind = 'sync-clock' AND state = 'pending'"
    )
    assert rows[0][:2] == (1000, 1000)
    logged = backend.raw(
        "SELECT count(*) FROM command_log l JOIN commands c ON c.id = l.command_id"
        f" WHERE c.job_id = {job.id} AND l.detail = 'queued by otto, job {job.id}'"
    )
    assert logged[0][0] == 1000
    progress = await store.jobs.progress(job.id)
    assert progress.counts == {CommandState.PENDING: 1000} and progress.open == 1000
    [line] = [a for a in await store.audit.log() if a.action == "start job"]
    assert line.target == f"job {job.id}" and "1000 meters" in (line.detail or "")
    # a single command of a job is claimed like any other; its end moves the counts
    [command] = await store.commands.claim(ldn(1000))
    await store.commands.finish(command.id, False, "the meter refused it")
    progress = await store.jobs.progress(job.id)
    assert progress.count(CommandState.FAILED) == 1
    assert [(f.ldn, f.reason) for f in progress.failures] == [(ldn(1000), "the meter refused it")]


@pytest_twisted.ensureDeferred
async def test_an_ldn_job_finishes_when_its_commands_end(backend: Backend) -> None:
    store, clock = await fleet(backend, 30)
    jobs = Jobs(store, REGISTRY, now=clock, chunk=7)
    ldns = [ldn(i) for i in range(0, 30, 2)]
    job = await jobs.start(JobRequest("valve-close", {}, expiry(clock), ldns=ldns), OTTO)
    await jobs.wait(job.id)
    assert (await store.jobs.get(job.id)).queued == 15
    for i, meter in enumerate(ldns):
        [command] = await store.commands.claim(meter)
        assert command.priority == 20  # the valve's priority
        await store.commands.finish(command.id, i != 3, "confirmed" if i != 3 else "fault")
    progress = await store.jobs.progress(job.id)
    assert progress.job.state is JobState.FINISHED
    assert (progress.count(CommandState.DONE), progress.count(CommandState.FAILED)) == (14, 1)
    with pytest.raises(JobStateError):
        await store.jobs.cancel(job.id, OTTO)


@pytest_twisted.ensureDeferred
async def test_cancel_stops_the_queuing_and_cancels_pending_commands_in_chunks(
    backend: Backend,
) -> None:
    store, clock = await fleet(backend)
    jobs = Jobs(store, REGISTRY, now=clock, chunk=50)
    job = await jobs.start(JobRequest("sync-clock", {}, expiry(clock)), OTTO)
    assert job.planned == COUNT
    await store.jobs.queue_filter(job, MeterQuery(), {REGISTRY.default: "{}"}, 0, 1)  # racing
    assert backend.raw("SELECT count(*) - count(DISTINCT meter_id) FROM commands")[0][0] == 0
    [sent] = await store.commands.claim(ldn(0))  # on its way: not cancelled
    cancelled = await store.jobs.cancel(job.id, OTTO, chunk=150)
    await jobs.wait(job.id)
    assert cancelled.state is JobState.CANCELLED
    progress = await store.jobs.progress(job.id)
    assert progress.count(CommandState.PENDING) == 0
    assert progress.count(CommandState.SENT) == 1
    assert progress.job.queued < COUNT  # the queuing stopped
    assert progress.count(CommandState.CANCELLED) == progress.job.queued - 1
    logged = backend.raw(
        "SELECT count(*) FROM command_log WHERE state = 'cancelled'"
        f" AND detail = 'by otto, job {job.id} cancelled'"
    )
    assert logged[0][0] == progress.job.queued - 1
    assert any(a.action == "cancel job" for a in await store.audit.log())
    assert (await store.commands.get(sent.id)).state is CommandState.SENT


@pytest_twisted.ensureDeferred
async def test_unknown_ldns_refuse_the_job_unless_skipped(backend: Backend) -> None:
    store, clock = await fleet(backend, 10)
    jobs = Jobs(store, REGISTRY, now=clock, chunk=4)
    unknown = [f"NOPE{i:012d}" for i in range(150)]
    ldns = [ldn(i) for i in range(10)] + unknown
    with pytest.raises(UnknownMeters) as refused:
        await jobs.start(JobRequest("sync-clock", {}, expiry(clock), ldns=ldns), OTTO)
    assert refused.value.count == 150 and list(refused.value.ldns) == unknown[:100]
    assert "and 50 more" in str(refused.value)
    assert backend.raw("SELECT count(*) FROM commands")[0][0] == 0
    assert backend.raw("SELECT count(*) FROM jobs")[0][0] == 0
    request = JobRequest("sync-clock", {}, expiry(clock), ldns=ldns, skip_unknown=True)
    job = await jobs.start(request, OTTO)
    await jobs.wait(job.id)
    job = await store.jobs.get(job.id)
    assert (job.planned, job.queued, job.skipped) == (10, 10, 150)
    assert "150 unknown skipped" in job.selection


@pytest_twisted.ensureDeferred
async def test_bad_parameters_and_deadlines_name_the_field_and_queue_nothing(
    backend: Backend,
) -> None:
    store, clock = await fleet(backend, 5)
    jobs = Jobs(store, REGISTRY, now=clock)
    cases = [
        (JobRequest("set-pdr", {"pdr": "12"}, expiry(clock)), "pdr"),
        (JobRequest("sync-clock", {"x": 1}, expiry(clock)), "x"),
        (JobRequest("fly", {}, expiry(clock)), "kind"),
        (JobRequest("sync-clock", {}, clock.now - dt.timedelta(hours=1)), "expires"),
        (JobRequest("sync-clock", {}, expiry(clock, 400)), "expires"),
        (JobRequest("sync-clock", {}, expiry(clock), query=MeterQuery(search="ZZZ")), "filter"),
        (JobRequest("sync-clock", {}, expiry(clock), ldns=[]), "ldns"),
    ]
    for request, field in cases:
        with pytest.raises(CommandError) as refused:
            await jobs.start(request, OTTO)
        assert refused.value.field == field, (request, refused.value)
    assert backend.raw("SELECT count(*) FROM commands")[0][0] == 0
    assert backend.raw("SELECT count(*) FROM jobs")[0][0] == 0
    with pytest.raises(UnknownJob):
        await store.jobs.progress(999)


@pytest_twisted.ensureDeferred
async def test_a_jobs_commands_expire_with_it(backend: Backend) -> None:
    store, clock = await fleet(backend, 3)
    jobs = Jobs(store, REGISTRY, now=clock)
    job = await jobs.start(JobRequest("sync-clock", {}, clock.now + dt.timedelta(hours=1)), OTTO)
    await jobs.wait(job.id)
    clock.advance(hours=2)
    assert await store.commands.expire() == 3
    progress = await store.jobs.progress(job.id)
    assert progress.count(CommandState.EXPIRED) == 3 and progress.job.state is JobState.FINISHED
    assert {f.state for f in progress.failures} == {CommandState.EXPIRED}
    assert [j.id for j in await store.jobs.page()] == [job.id]
    assert json.loads(json.dumps(progress.job.source)) == {}


def test_a_secret_value_is_hidden_in_what_the_job_keeps() -> None:
    pin = {"setting": "valve_pin", "value": 1234, "text": "(hidden)"}
    assert shown(pin) == {"setting": "valve_pin", "value": "(hidden)", "text": "(hidden)"}
    plain = {"setting": "push_window", "value": [1, 2], "text": "01:00-02:00"}
    assert shown(plain) == plain


@pytest_twisted.ensureDeferred
async def test_the_job_keeps_the_checked_parameters(backend: Backend) -> None:
    store, clock = await fleet(backend, 2)
    jobs = Jobs(store, REGISTRY, now=clock)
    job = await jobs.start(JobRequest("set-pdr", {"pdr": "12345678901234"}, expiry(clock)), OTTO)
    assert job.params == {"pdr": "12345678901234"}
