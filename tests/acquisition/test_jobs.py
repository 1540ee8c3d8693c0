"""A job end to end: simulated meters push to a real SAC over TCP, each session runs the
job's command, and the job's progress moves to all done -- on both stores."""

from __future__ import annotations

import datetime as dt

import pytest_twisted
from twisted.internet.defer import Deferred, gatherResults

from sac.services.jobs import JobRequest, Jobs
from sac.store import Actor, CommandState, JobState, MeterQuery
from tests.acquisition.conftest import REGISTRY, Sac, push_once, sacs, started  # noqa: F401
from tests.store.conftest import Backend

METERS = 60
AT_ONCE = 15


@pytest_twisted.ensureDeferred
async def test_a_job_over_a_pushing_fleet_reaches_all_done(
    backend: Backend,
    sacs: list[Sac],  # noqa: F811
) -> None:
    store, fleet, _sac, port = await started(backend, sacs, METERS)
    jobs = Jobs(store, REGISTRY, now=store.now, chunk=25)
    expires = store.now() + dt.timedelta(hours=1)
    job = await jobs.start(JobRequest("sync-clock", {}, expires, query=MeterQuery()), Actor("otto"))
    await jobs.wait(job.id)
    progress = await store.jobs.progress(job.id)
    assert progress.count(CommandState.PENDING) == METERS and not progress.job.queuing
    seen = [0]
    for i in range(0, METERS, AT_ONCE):
        batch = fleet.meters[i : i + AT_ONCE]
        await gatherResults([Deferred.fromCoroutine(push_once(port, m)) for m in batch])
        progress = await store.jobs.progress(job.id)
        seen.append(progress.count(CommandState.DONE))
        assert seen[-1] > seen[-2], seen  # progress moves with each batch of sessions
    assert progress.count(CommandState.DONE) == METERS, progress.failures
    assert progress.job.state is JobState.FINISHED and progress.job.finished is not None
    command = (await store.commands.recent(fleet.meters[0].ldn, limit=1))[0]
    assert command.result and command.result.startswith("clock set to")


@pytest_twisted.ensureDeferred
async def test_a_setting_applied_to_a_fleet_by_a_job_is_read_back_on_each_meter(
    backend: Backend,
    sacs: list[Sac],  # noqa: F811
) -> None:
    store, fleet, _sac, port = await started(backend, sacs, 20)
    jobs = Jobs(store, REGISTRY, now=store.now, chunk=7)
    expires = store.now() + dt.timedelta(hours=1)
    params = {"setting": "push_times", "value": "04:30, 16:30"}
    wanted = JobRequest("set-setting", params, expires, query=MeterQuery())
    job = await jobs.start(wanted, Actor("otto"))
    await jobs.wait(job.id)
    await gatherResults([Deferred.fromCoroutine(push_once(port, m)) for m in fleet.meters])
    progress = await store.jobs.progress(job.id)
    assert progress.count(CommandState.DONE) == 20, progress.failures
    assert all(len(m.settings.push_times) == 2 for m in fleet.meters)
    [command] = await store.commands.recent(fleet.meters[3].ldn, limit=1)
    assert command.result == "Push times set to 04:30, 16:30, confirmed by reading it back"
