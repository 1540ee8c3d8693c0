"""Reading ``/metrics`` as Prometheus would: with ``prometheus_client``'s own parser of the
text format, so that a page it could not read fails the tests that look at it."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def metric(text: str, name: str, **labels: str) -> float:
    """The value of sample ``name`` with exactly ``labels`` in a /metrics page (0 if absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0
