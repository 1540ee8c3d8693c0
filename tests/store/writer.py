"""A writer process for the kill -9 test: ingests batches and reports each one committed.

    python -m tests.store.writer sqlite PATH | postgresql DSN

Prints ``acked <n>`` after batch n (readings n*50 .. n*50+49) is committed, until killed.
"""

from __future__ import annotations

import datetime as dt
import sys

from twisted.internet import task

from sac.dlms import Obis
from sac.store import NewMeter, Reading
from sac.store.postgres import PostgresStore
from sac.store.sqlite import SQLiteStore
from tests.store.conftest import MASTER

LDN = "FIO0000000000042"
BATCH = 50


async def write(reactor: object, kind: str, where: str) -> None:
    store = SQLiteStore(where, MASTER) if kind == "sqlite" else PostgresStore(where, MASTER)
    await store.open()
    if await store.meters.get(LDN) is None:
        await store.meters.add(NewMeter(LDN))
    now = dt.datetime.now(dt.UTC)
    n = 0
    while True:
        batch = [
            Reading(LDN, Obis("7.0.13.2.0.255"), 2, n * BATCH + j, now, "test")
            for j in range(BATCH)
        ]
        await store.readings.add(batch)
        print(f"acked {n}", flush=True)
        n += 1


if __name__ == "__main__":
    task.react(lambda reactor: task.Deferred.fromCoroutine(write(reactor, *sys.argv[1:3])))
