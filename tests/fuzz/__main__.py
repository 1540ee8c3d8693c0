"""``python -m tests.fuzz``: the long fuzzing run of issue 9 (the short one is in the suite).

    .venv/bin/python -m tests.fuzz --direct 1000000 --push 1000000 --poll 20000

The decoders, then a real ``twistd sac`` on PostgreSQL (a fresh database, dropped after) and
the polling client over loopback.  Prints the figures as JSON; exits 1 on any problem, and
writes the decoder frames that found one into tests/fuzz/corpus/.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.internet.task import react

from sac.store.postgres import PostgresStore
from tests.fuzz.run import fuzz_run, save_corpus
from tests.store.conftest import MASTER, PostgresTestDatabase

CORPUS = Path(__file__).parent / "corpus"


async def main(reactor: object, args: argparse.Namespace) -> None:
    database = PostgresTestDatabase(args.postgres)
    store = PostgresStore(database.dsn, MASTER, connections=2)
    await store.open()
    try:
        with tempfile.TemporaryDirectory(prefix="sac-fuzz-") as tmp:
            report = await fuzz_run(
                Path(tmp), store, database.dsn,
                direct_frames=args.direct, push_frames=args.push, poll_frames=args.poll,
                seed=args.seed, log_level="info", concurrency=args.concurrency,
            )  # fmt: skip
    finally:
        await store.close()
        database.drop()
    saved = save_corpus(report, CORPUS)
    summary = report.summary()
    summary["corpus_added"] = [p.name for p in saved]
    print(json.dumps(summary, indent=2))
    if summary["problems"]:
        raise SystemExit(1)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    parser.add_argument("--direct", type=int, default=1_000_000, help="frames into the decoders")
    parser.add_argument("--push", type=int, default=1_000_000, help="frames to the push listener")
    parser.add_argument("--poll", type=int, default=20_000, help="answers to the polling client")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=32, help="push connections at once")
    parser.add_argument(
        "--postgres", default="host=127.0.0.1 port=5432 user=postgres dbname=postgres"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse(sys.argv[1:])
    react(lambda reactor: Deferred.fromCoroutine(main(reactor, arguments)))
