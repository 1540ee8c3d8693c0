"""The running SAC's metrics, with ``prometheus_client``: every one declared once, below, with
its help text and labels; rendered on ``/metrics`` in the Prometheus text format.

Each :class:`Metrics` has a registry of its own (a process runs one; the tests run many side
by side), with the process' CPU, memory, open files and garbage-collector figures that
``prometheus_client`` collects.  The parts of the SAC count (:meth:`Metrics.count`), time
(:meth:`Metrics.observe`) and give gauges a function to read (:meth:`Metrics.gauge`) by the
metric's name; a name not declared here is a programming error (KeyError), found by the
tests, never a new series made up at run time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

__all__ = ["CONTENT_TYPE", "DECLARED", "Declared", "Metrics"]

# the text format's media type (prometheus_client's CONTENT_TYPE_LATEST names 1.0.0 on some
# versions, which older Prometheus servers refuse; 0.0.4 is what they all read)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# no "<name>_created" series beside each counter and histogram: a scrape's size halves, and
# Prometheus does not need them (process-wide, but no part of the SAC wants them)
disable_created_metrics()

# a push session lasts from under 100 ms (a push acknowledged) to its limits (30 s, minutes
# with commands); a store transaction from under a millisecond (SQLite) to seconds (a busy
# PostgreSQL); a page from milliseconds to the seconds an export or a search can take
_SESSION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
_WEB_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass(frozen=True, slots=True)
class Declared:
    kind: type[Counter] | type[Gauge] | type[Histogram]
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()


def _counter(help: str, *labels: str) -> Declared:
    return Declared(Counter, help, labels)


def _histogram(help: str, buckets: tuple[float, ...], *labels: str) -> Declared:
    return Declared(Histogram, help, labels, buckets)


DECLARED: dict[str, Declared] = {
    # push listener and sessions (sac.protocols.push, sac.services.push, .acquisition)
    "sac_push_connections": Declared(Gauge, "Push connections open now"),
    "sac_push_sessions_total": _counter("Push sessions ended, by outcome", "outcome"),
    "sac_push_session_seconds": _histogram(
        "Push sessions' duration, connection to close, by outcome", _SESSION_BUCKETS, "outcome"
    ),
    "sac_push_refused_total": _counter("Push connections refused at accept, by reason", "reason"),
    "sac_push_closed_total": _counter("Push connections closed on a problem, by reason", "reason"),
    "sac_push_rejected_total": _counter("Pushed frames not stored, by reason", "reason"),
    "sac_push_late_total": _counter("Push sessions still waiting for the meter's push"),
    "sac_push_stored_total": _counter("Pushed frames stored"),
    "sac_push_spooled_total": _counter("Pushed frames spooled while the store was unavailable"),
    "sac_push_store_failures_total": _counter("Pushed frames the store failed to take"),
    "sac_readings_stored_total": _counter("Readings stored from pushed frames"),
    # every ingest (pushes, polls, sessions, the spool): sac.services.ingest.count_alarms
    "sac_alarms_total": _counter("Alarm events newly stored, by category", "category"),
    "sac_spool_depth": Declared(Gauge, "Frames in the spool, waiting for the store"),
    # polls (sac.services.poller)
    "sac_polls_running": Declared(Gauge, "Polls under way"),
    "sac_polls_total": _counter("Polls ended, by outcome", "outcome"),
    # the connections' record (sac.services.connections)
    "sac_connections_lost_total": _counter(
        "Sessions' records not stored (the store failed, or too many waited)"
    ),
    # the store (sac.store.connector)
    "sac_store_seconds": _histogram(
        "Store transactions' duration, by transaction", _STORE_BUCKETS, "transaction"
    ),
    # the web (sac.web.listener, sac.web.app)
    "sac_web_connections": Declared(Gauge, "Web connections open now"),
    "sac_web_refused_total": _counter("Web connections refused, by reason", "reason"),
    "sac_web_closed_total": _counter("Web connections closed on a deadline, by reason", "reason"),
    "sac_web_request_seconds": _histogram(
        "Web requests' duration, full request to answer, by part", _WEB_BUCKETS, "part"
    ),
    "sac_sign_in_refused_total": _counter("Sign-ins refused by the throttle"),
    "sac_sign_in_busy_total": _counter("Sign-ins refused: too many password checks at once"),
    "sac_password_checks_total": _counter("Password checks made"),
    # the process (sac.tap)
    "sac_log_errors_total": _counter("Log events at warn level and above, by level", "level"),
    "sac_open_files_exhausted_total": _counter("Connections refused: no file descriptor left"),
}


class Metrics:
    def __init__(self, process: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        if process:  # the process' figures (Linux: /proc), as prometheus_client's default
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        self._metrics: dict[str, Counter | Gauge | Histogram] = {}
        self._read: set[str] = set()  # the gauges given a function
        # the labelled series met so far (prometheus_client's labels() costs some 5 us a call,
        # twice a push session)
        self._series: dict[tuple[str, tuple[tuple[str, str], ...]], Any] = {}
        for name, declared in DECLARED.items():
            self._metrics[name] = _make(name, declared, self.registry)

    def count(self, name: str, amount: int = 1, **labels: str) -> None:
        self._series_of(name, Counter, labels).inc(amount)

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        self._series_of(name, Histogram, labels).observe(seconds)

    def _series_of(self, name: str, kind: type, labels: dict[str, str]) -> Any:
        key = (name, tuple(labels.items()))
        series = self._series.get(key)
        if series is None:
            metric = self._metrics[name]
            assert isinstance(metric, kind), name
            series = self._series[key] = metric.labels(**labels) if labels else metric
        return series

    def gauge(self, name: str, read: Callable[[], float]) -> None:
        """The gauge ``name`` reads ``read()`` at each scrape (the last one given wins)."""
        metric = self._metrics[name]
        assert isinstance(metric, Gauge), name
        metric.set_function(read)
        self._read.add(name)

    def reading(self, name: str) -> float | None:
        """A gauge's reading now; None where no part gave it a function (no spool...)."""
        return self.value(name) if name in self._read else None

    def value(self, name: str, **labels: str) -> float:
        """A counter's value (0 where it never counted) or a gauge's reading."""
        found = self.registry.get_sample_value(name, labels)
        return 0 if found is None else found

    def total(self, name: str) -> float:
        """A counter's value summed over all its labels."""
        return sum(value for _, value in self.samples(name))

    def samples(self, name: str) -> Iterator[tuple[dict[str, str], float]]:
        """A counter's or gauge's (labels, value), one per series."""
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name == name:
                    yield sample.labels, sample.value

    def render(self) -> bytes:
        """The Prometheus text exposition format."""
        return generate_latest(self.registry)


def _make(
    name: str, declared: Declared, registry: CollectorRegistry
) -> Counter | Gauge | Histogram:
    if declared.kind is Histogram:
        return Histogram(
            name, declared.help, declared.labels, registry=registry, buckets=declared.buckets
        )
    return declared.kind(name, declared.help, declared.labels, registry=registry)
