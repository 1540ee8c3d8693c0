"""Jobs over SOAP as an ERP uses them (zeep on a real port): start by LDNs or by filter,
follow, list, cancel; unknown LDNs, bad parameters and roles as documented faults."""

from __future__ import annotations

import datetime as dt

import pytest_twisted

from tests.acquisition.conftest import Sac, sacs  # noqa: F401 -- fixture
from tests.store.conftest import Backend
from tests.web.test_soap import erp_sac


@pytest_twisted.ensureDeferred
async def test_an_erp_starts_follows_and_cancels_a_job(
    backend: Backend,
    sacs: list[Sac],  # noqa: F811
) -> None:
    erp = await erp_sac(backend, sacs, 4, pushing=0)
    client = await erp.call(erp.client)
    viewer = await erp.call(lambda: erp.client("auditor"))
    ldns = [m.ldn for m in erp.fleet.meters]
    deadline = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    s = client.service
    code, message = await erp.fault(
        lambda: s.StartJob(
            "sync-clock", None, deadline, None, {"string": [*ldns, "NOPE000000000001"]}
        )
    )
    assert code == "Client.UnknownMeters" and "NOPE000000000001" in message, message
    code, message = await erp.fault(
        lambda: s.StartJob("set-pdr", '{"pdr": "1"}', deadline, None, {"string": ldns})
    )
    assert code == "Client.InvalidParameter" and message.startswith("pdr:"), message
    code, _ = await erp.fault(lambda: s.StartJob("sync-clock", None, deadline, None, None))
    assert code == "Client.BadInput"
    code, _ = await erp.fault(
        lambda: viewer.service.StartJob("sync-clock", None, deadline, {}, None)
    )
    assert code == "Client.Forbidden"
    assert backend.raw("SELECT count(*) FROM commands")[0][0] == 0
    job = await erp.call(
        lambda: s.StartJob(
            "sync-clock", None, deadline, None, {"string": [*ldns[:3], "NOPE1"]}, True
        )
    )
    assert (job.planned, job.skipped, job.state) == (3, 1, "running")
    by_filter = await erp.call(
        lambda: s.StartJob("valve-close", None, deadline, {"search": ldns[3]}, None)
    )
    assert by_filter.planned == 1 and "starting" in by_filter.selection
    await erp.sac.store.jobs.get(job.id)  # stored
    followed = await erp.call(lambda: viewer.service.GetJob(job.id))
    assert followed.id == job.id and followed.kind == "sync-clock"
    page = await erp.call(lambda: viewer.service.ListJobs(None, 1))
    assert [j.id for j in page.jobs.JobInfo] == [by_filter.id] and page.next == by_filter.id
    cancelled = await erp.call(lambda: s.CancelJob(job.id))
    assert cancelled.state == "cancelled"
    code, _ = await erp.fault(lambda: s.CancelJob(job.id))
    assert code == "Client.JobState"
    code, _ = await erp.fault(lambda: s.GetJob(99999))
    assert code == "Client.UnknownJob"
    trail = [a.action for a in await erp.sac.store.audit.log(50)]
    assert "soap StartJob" in trail and "start job" in trail and "cancel job" in trail
