"""The short soak of the suite (``python -m tests.soak`` is the issue's 1,000 meters for
10 minutes): meters pushing through a real ``twistd sac`` on PostgreSQL, PostgreSQL restarted
twice, the SAC killed with SIGKILL once; every acknowledged reading stored exactly once, no
counter sent twice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytest_twisted

from tests.soak import can_restart_postgres, soak
from tests.store.conftest import PostgresTestDatabase, postgres  # noqa: F401 -- the fixture

# restarts PostgreSQL: alone (make test's second run), and 40 s long
pytestmark = [pytest.mark.slow, pytest.mark.serial]


@pytest_twisted.ensureDeferred
async def test_soak_with_postgres_restarts_and_a_sigkill(
    postgres: PostgresTestDatabase | str,  # noqa: F811 -- the fixture
    tmp_path: Path,
) -> None:
    if isinstance(postgres, str):
        pytest.skip(postgres)
    why = can_restart_postgres()
    if why:
        pytest.skip(f"PostgreSQL cannot be restarted from here: {why}")
    report = await soak(tmp_path, meters=150, seconds=40, interval=3)
    summary = report.summary()
    assert not report.problems, json.dumps(summary, indent=2)
    assert len(report.faults) == 3, summary
    assert report.readings_checked == len(report.acknowledged) > 1000, summary
    assert report.pushes > len(report.acknowledged)  # the faults did cost some pushes
    assert report.counters_checked > 0, summary  # commands ran: the SAC's counters in play
