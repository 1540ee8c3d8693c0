"""Shared fixtures: the public test vectors of tests/vectors/vectors.json (or ``$SAC_VECTORS``),
explained in docs/uni-ts-11291.md section 8."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VECTORS = ROOT / "tests" / "vectors" / "vectors.json"
VECTORS_PATH = Path(os.environ.get("SAC_VECTORS", DEFAULT_VECTORS))

settings.register_profile("default", max_examples=300, deadline=None)
settings.register_profile(
    "fuzz",
    max_examples=100_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("ci", max_examples=300, deadline=None, derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On pytest-xdist's workers (make test), the tests marked slow first (in their order):
    each worker starts on a long one and the short ones fill in after, instead of the long
    ones meeting at the end of the run."""
    if hasattr(config, "workerinput"):
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@cache
def all_vectors() -> dict[str, dict[str, Any]]:
    data = json.loads(VECTORS_PATH.read_text())
    return {v["id"]: v for v in data["vectors"]}


def vector(vid: str) -> dict[str, Any]:
    return all_vectors()[vid]


def vbytes(vid: str, key: str = "hex") -> bytes:
    return bytes.fromhex(all_vectors()[vid][key])
