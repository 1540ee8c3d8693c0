"""The short fuzzing run of the suite (``python -m tests.fuzz`` is the long one), and the
corpus: every frame that ever found a bug, replayed into its target."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from sac.errors import SacError
from sac.store.sqlite import SQLiteStore
from tests.acquisition.conftest import Backend, Sac, failures_logged, started
from tests.acquisition.test_faults import send_raw
from tests.fuzz.direct import targets
from tests.fuzz.run import fuzz_run
from tests.store.conftest import MASTER

CORPUS = sorted((Path(__file__).parent / "corpus").glob("*.json"))


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_mutated_frames_over_loopback_harm_nothing(tmp_path: Path) -> None:
    """3,000 mutated pushes into a real ``twistd sac`` and 300 mutated answers into the
    polling client, a good meter pushing and another polled all along; 30,000 frames into
    the decoders."""
    store = SQLiteStore(tmp_path / "sac.db", MASTER)
    await store.open()
    try:
        report = await fuzz_run(
            tmp_path, store, f"sqlite:{tmp_path / 'sac.db'}",
            direct_frames=30_000, push_frames=3_000, poll_frames=300, seed=20261121,
        )  # fmt: skip
    finally:
        await store.close()
    summary = report.summary()
    assert not report.problems(), json.dumps(summary, indent=2)
    wire = report.wire
    assert wire is not None and wire.push_frames >= 3_000 and wire.poll_frames >= 300
    assert wire.push_inner > 300 and wire.push_outer > 1_500  # both kinds were tried
    assert wire.canary_pushes >= 5 and wire.canary_polls >= 2  # the good ones went on
    assert wire.polls_failed > 0  # mutated answers do make polls fail (cleanly)
    # the SAC refused the broken frames, each counted with its reason
    closed = {k: v for k, v in report.sac_metrics.items() if k.startswith("sac_push_closed")}
    assert sum(closed.values()) > 1_000, closed
    # and its memory did not run away (a leak per frame would show over 3,000 connections)
    warm, last = report.sac_rss_kib[1], report.sac_rss_kib[-1]
    assert last - warm < 64 * 1024, report.sac_rss_kib


DIRECT = [p for p in CORPUS if json.loads(p.read_text())["target"] != "push-listener"]
WIRE = [p for p in CORPUS if p not in DIRECT]


@pytest.mark.parametrize("case", DIRECT, ids=[p.stem for p in DIRECT])
def test_the_corpus_is_refused_cleanly(case: Path) -> None:
    found = json.loads(case.read_text())
    by_name = {name: target for name, target, _seeds in targets()}
    with contextlib.suppress(SacError):
        by_name[found["target"]](bytes.fromhex(found["hex"]))


@pytest.mark.parametrize("case", WIRE, ids=[p.stem for p in WIRE])
@pytest_twisted.ensureDeferred
async def test_the_corpus_over_loopback_crashes_nothing(
    case: Path, backend: Backend, sacs: list[Sac]
) -> None:
    """The push-listener's finds, sent as they were to a SAC that knows the meter (the first
    meter of ``make_fleet(1)``, whose key ciphered them)."""
    found = json.loads(case.read_text())
    _store, _fleet, sac, port = await started(backend, sacs)
    with failures_logged() as failures:
        await send_raw(port, bytes.fromhex(found["hex"]), then_close=found["then"] == "hang-up")
        for _ in range(300):
            if not sac.factory.active and sac.acquisition.metrics.total("sac_push_sessions_total"):
                break
            await deferLater(reactor, 0.01, lambda: None)
        await deferLater(reactor, 0.05, lambda: None)
    assert not failures, failures[0].getTraceback()
    assert sac.acquisition.metrics.value("sac_push_closed_total", reason="error") == 0


def test_the_corpus_has_both_kinds() -> None:
    assert DIRECT and WIRE
