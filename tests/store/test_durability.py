"""An acknowledged write survives kill -9 of the writing process, on every backend."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest_twisted

from sac.dlms import Obis
from tests.conftest import ROOT
from tests.store.conftest import Backend
from tests.store.writer import BATCH, LDN

ACKED_BEFORE_KILL = 25


@pytest_twisted.ensureDeferred
async def test_acknowledged_readings_survive_sigkill(backend: Backend) -> None:
    where = str(backend.path) if backend.kind == "sqlite" else backend.dsn
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.store.writer", backend.kind, where],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acked = -1
    try:
        for line in writer.stdout:  # type: ignore[union-attr]
            acked = int(line.split()[1])
            if acked >= ACKED_BEFORE_KILL:
                os.kill(writer.pid, signal.SIGKILL)  # mid-ingest: the next batch is under way
                break
    finally:
        writer.kill()
        writer.wait(timeout=30)
    assert acked >= ACKED_BEFORE_KILL, writer.stderr.read()  # type: ignore[union-attr]
    assert writer.returncode == -signal.SIGKILL

    store = backend.make()
    await store.open()
    count = await store.count_readings()
    assert count >= (acked + 1) * BATCH  # every acknowledged batch, maybe one more
    assert count % BATCH == 0  # and no batch in part
    values = {r.value for r in await store.last_readings(LDN, Obis("7.0.13.2.0.255"), limit=count)}
    assert set(range((acked + 1) * BATCH)) <= values
