"""``twistd -n sac --config sac.ini``: the whole SAC as one Twisted service.

:class:`SacService` is a ``MultiService`` whose parts start in order, each once the one
before is ready: the store (migrations applied), the spool, the push listener(s) with
acquisition, the poll scheduler, the command queue's housekeeping, the web application
(pages, JSON API, SOAP, ``/metrics``, ``/health``).  A part that cannot start (the store
unreachable, a port taken) stops the whole with one log line and a non-zero exit status.

A stop (SIGTERM, SIGINT) goes the other way: nothing new is accepted (ports closed, no new
polls), the sessions in flight get ``[sac] stop_grace`` seconds to finish, then are cut and
their claimed commands and polls handed back to the queue; the spool is flushed and closed,
then the store.  What was accepted is stored or on the spool, and a restart replays it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import os
import resource
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, LogLevel, globalLogPublisher
from twisted.python import usage

from sac.config import Config, ConfigProblems, load_config
from sac.errors import SacError
from sac.logs import prepare

__all__ = ["Options", "SacService", "makeService"]

# open files kept for all but the connections: the store, the spool, the log, listening
# sockets, the resolver...
RESERVED_FILES = 256
WEB_CONNECTIONS = 1000  # the most [web] max_connections is when computed
MIN_WEB_CONNECTIONS = 64


def _version() -> str:
    try:
        return metadata.version("sac")
    except metadata.PackageNotFoundError:
        return "source"


class Options(usage.Options):
    synopsis = "[--config FILE] [--check]"
    longdesc = (
        "Run the SAC (push listeners, poll scheduler, command queue, web pages, JSON API, "
        "SOAP).  Every setting is documented in sac.ini.example and may also be given as "
        "SAC_<SECTION>_<NAME> in the environment; the master key comes from $SAC_MASTER_KEY "
        "or [store] master_key_file."
    )
    optParameters = [
        ["config", "c", None, "the configuration file (default: $SAC_CONFIG, else none)"],
    ]
    optFlags = [
        ["check", None, "check the configuration, print the settings in force, and exit"],
    ]

    config: Config

    def postOptions(self) -> None:
        try:
            self.config = load_config(self["config"])
        except ConfigProblems as problems:
            raise SystemExit(f"sac: {problems}") from None
        if self["check"]:
            for name, value, source in self.config.shown():
                print(f"{name:28} {value:40} {source}")
            raise SystemExit(0)
        parent = getattr(self, "parent", None)
        # twistd's own --logger or --logfile win; else the log is as [log] says
        if parent is not None and parent.get("logger") is None and not parent.get("logfile"):
            log = self.config.log
            prepare(log.format, log.level, log.file)
            parent["logger"] = "sac.logs.configured_observer"


def makeService(options: Options) -> SacService:
    return SacService(options.config)


class SacService(MultiService):
    """The SAC.  ``ready`` fires once every part has started (with the web and push ports),
    or fails with what stopped the start; the reactor is then stopped with exit status 1
    unless ``exit_on_failure`` is False."""

    log = Logger()
    name = "sac"  # type: ignore[assignment]  # Twisted types Service.name as None

    def __init__(self, config: Config, *, reactor: Any = None, exit_on_failure: bool = True):
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.config = config
        self.reactor = reactor
        self.clock: Any = reactor  # the store's health probe: its period and its timeout
        self.exit_on_failure = exit_on_failure
        self.ready: Deferred[SacService] = Deferred()
        self.store: Any = None
        self.spool: Any = None
        self.acquisition: Any = None
        self.push: Any = None
        self.poller: Any = None
        self.housekeeping: Any = None
        self.connections: Any = None  # the sessions' records (sac.services.connections)
        self.pruning: Any = None
        self.web: Any = None
        self.push_ports: list[Any] = []
        self.udp_ports: list[Any] = []
        self.web_ports: list[Any] = []
        self._starting: Deferred[None] | None = None
        self._probe: LoopingCall | None = None
        self.store_health: tuple[bool, str] = (False, "not checked yet")
        self._stopped = False
        self.web_connections = WEB_CONNECTIONS
        self._emfile: _OpenFilesAlarm | None = None

    # --- start ----------------------------------------------------------------------------

    def startService(self) -> None:
        # the children are started here in order, each once the one before is ready
        self.running = True
        self._starting = Deferred.fromCoroutine(self._start())
        self._starting.addCallbacks(lambda _: self.ready.callback(self), self._start_failed)

    async def _start(self) -> None:
        from sac.profiles import discover_profiles
        from sac.runtime import tune_gc
        from sac.services.metrics import Metrics

        c = self.config
        self.log.info(
            "SAC {version} starting (configuration: {file}, process {name})",
            version=_version(),
            file=c.file or "defaults and the environment",
            name=c.process_name,
        )
        found = discover_profiles()
        for problem in found.problems:
            self.log.warn("meter profiles: {problem}", problem=problem)
        self.registry = found.registry
        self.metrics = Metrics()
        self._emfile = _OpenFilesAlarm(self.metrics, self.reactor)
        # a plain callable observer: Twisted's signature says ILogObserver, its loop just calls it
        globalLogPublisher.addObserver(self._count_errors)  # type: ignore[arg-type]
        self._open_files()
        await self._open_store()
        await self._open_spool()
        self._start_connections()
        await self._start_push()
        self._start_polls()
        self._start_housekeeping()
        await self._start_web()
        tune_gc()
        self.log.info(
            "SAC ready: web {web}, push {push}{udp}, {profiles} meter profiles",
            web=", ".join(_where(p) for p in self.web_ports) or "off",
            push=", ".join(_where(p) for p in self.push_ports) or "off",
            udp="".join(f", udp {_where(p)}" for p in self.udp_ports),
            profiles=len(self.registry.profiles),
        )

    def _open_files(self) -> None:
        """Each session is a file descriptor: raise the soft limit (often 1,024) up to the
        hard one, as far as max_sessions and the web's connections need, and say so when it
        cannot reach it.  Sets :attr:`web_connections`: ``[web] max_connections``, or when
        empty, half of what the limit leaves beside the push sessions and
        :data:`RESERVED_FILES` (at most :data:`WEB_CONNECTIONS`, at least
        :data:`MIN_WEB_CONNECTIONS`)."""
        push = self.config.push.max_sessions if self.config.push.listen else 0
        web: int | None = self.config.web.max_connections
        needed = push + RESERVED_FILES + (web if web is not None else WEB_CONNECTIONS)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        if soft != resource.RLIM_INFINITY and soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        limit = needed if soft == resource.RLIM_INFINITY else soft
        if web is None:
            left = (limit - push - RESERVED_FILES) // 2
            web = max(MIN_WEB_CONNECTIONS, min(WEB_CONNECTIONS, left))
        self.web_connections = web
        if limit < push + RESERVED_FILES + web:
            self.log.warn(
                "open files limited to {n} (hard limit): [push] max_sessions ({push}), [web]"
                " max_connections ({web}) and {reserved} for the rest do not fit; a flood on"
                " one port can starve the other: lower them or raise LimitNOFILE"
                " (docs/operations.md)",
                n=limit,
                push=push,
                web=web,
                reserved=RESERVED_FILES,
            )

    async def _open_store(self) -> None:
        from sac.services.ingest import count_alarms
        from sac.store.factory import is_postgres, store_at

        c = self.config
        address: str = c.store.address
        extra = {"connections": c.store.connections} if is_postgres(address) else {}
        self.store = store_at(c.store_dsn, c.master_key, reactor=self.reactor, **extra)
        self.store.observe = lambda transaction, seconds: self.metrics.observe(
            "sac_store_seconds", seconds, transaction=transaction
        )
        self.store.readings.observe_ingest = functools.partial(count_alarms, self.metrics)
        before, after = await self.store.open()
        self.store_health = (True, f"{type(self.store).__name__}, schema version {after}")
        self._probe = LoopingCall(lambda: Deferred.fromCoroutine(self._check_store()))
        self._probe.clock = self.clock
        self._probe.start(5.0, now=False)
        migrated = f" (migrated from {before})" if after != before else ""
        self.log.info(
            "store ready: {kind}, schema version {version}{migrated}",
            kind=type(self.store).__name__,
            version=after,
            migrated=migrated,
        )

    async def _check_store(self) -> None:
        """Every 5 s, what /health says of the store: a round trip within 5 s."""
        probe = Deferred.fromCoroutine(self.store.ping())
        probe.addTimeout(5.0, self.clock)
        kind = type(self.store).__name__
        try:
            await probe
        except Exception as exc:
            if self.store_health[0]:
                self.log.warn("store: no answer to the health check: {e}", e=exc)
            self.store_health = (False, f"{kind}: {exc or type(exc).__name__}")
            return
        if not self.store_health[0]:
            self.log.info("store: answering again")
        self.store_health = (True, f"{kind}, answered at {dt.datetime.now(dt.UTC):%H:%M:%S}")

    async def _open_spool(self) -> None:
        from sac.services.spool import Spool

        c = self.config.push
        if not (c.listen or c.udp):
            return
        directory = Path(c.spool)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.spool = Spool(directory, reactor=self.reactor, max_bytes=c.spool_max_mb * 2**20)
        await self.spool.open()
        if self.spool.depth:
            self.log.info(
                "spool {dir}: {n} pushes from before, replayed now",
                dir=directory,
                n=self.spool.depth,
            )

    async def _start_push(self) -> None:
        from sac.protocols.listen import listen_datagrams, listen_sessions
        from sac.protocols.push import ListenerSettings
        from sac.services.acquisition import Acquisition
        from sac.services.push import PushDatagramProtocol, PushFactory
        from sac.services.session import SessionSettings

        c, p = self.config, self.config.push
        if not (p.listen or p.udp):
            return
        self.acquisition = Acquisition(
            self.store,
            self.registry,
            reactor=self.reactor,
            metrics=self.metrics,
            spool=self.spool,
            store_timeout=p.store_timeout,
            spool_per_address=p.spool_per_address,
            system_title=c.sac.system_title,
        )
        self.acquisition.start()
        self.push = PushFactory(
            self.acquisition,
            self.store,
            reactor=self.reactor,
            settings=_from_section(ListenerSettings, p),
            session=self._session_settings(SessionSettings, read_plan=p.read_plan),
            connections=self.connections,
        )
        for description in p.listen:
            self.push_ports.append(
                await listen_sessions(self.reactor, description, self.push, reset_on_death=True)
            )
        for description in p.udp:
            protocol = PushDatagramProtocol(self.acquisition, max_pdu=p.max_pdu)
            self.udp_ports.append(listen_datagrams(self.reactor, description, protocol))

    def _session_settings(self, kind: Any, **more: Any) -> Any:
        return kind(
            system_title=self.config.sac.system_title, name=self.config.process_name, **more
        )

    def _start_polls(self) -> None:
        from sac.services.poller import Poller, PollSettings
        from sac.services.session import SessionSettings

        p = self.config.poll
        if not p.enabled:
            return
        self.poller = Poller(
            self.store,
            self.registry,
            reactor=self.reactor,
            settings=_from_section(PollSettings, p),
            session=self._session_settings(SessionSettings),
            metrics=self.metrics,
            connections=self.connections,
        )
        self.poller.setName("poll scheduler")
        self.poller.setServiceParent(self)  # started by it: this service is running

    def _start_connections(self) -> None:
        """The sessions' records: written in batches, forgotten after
        ``[store] keep_connections_days``."""
        from sac.services.connections import ConnectionLog, ConnectionPruning

        self.connections = ConnectionLog(self.store, reactor=self.reactor, metrics=self.metrics)
        keep = dt.timedelta(days=self.config.store.keep_connections_days)
        self.pruning = ConnectionPruning(self.store, keep, reactor=self.reactor)
        self.pruning.setName("connections' record")
        self.pruning.setServiceParent(self)

    def _start_housekeeping(self) -> None:
        from sac.services.housekeeping import Housekeeping

        c = self.config.commands
        self.housekeeping = Housekeeping(
            self.store, reactor=self.reactor, every=c.housekeeping_every, stale_after=c.stale_after
        )
        self.housekeeping.setName("command queue")
        self.housekeeping.setServiceParent(self)

    async def _start_web(self) -> None:
        from sac.protocols.listen import listen_sessions
        from sac.web.app import Web
        from sac.web.listener import WebLimits

        w = self.config.web
        if not w.listen:
            return
        self.web = Web(
            self.store,
            self.registry,
            metrics=self.metrics,
            settings=_web_settings(w),
            health=self._health(),
            configuration=self._configuration_shown(),
        )
        limits = WebLimits(
            max_connections=self.web_connections,
            header_timeout=w.header_timeout,
            body_timeout=w.body_timeout,
        )
        site = self.web.site(limits, reactor=self.reactor)
        self.log.info(
            "web: at most {n} connections at once, headers within {h:g} s, body within {b:g} s",
            n=limits.max_connections,
            h=limits.header_timeout,
            b=limits.body_timeout,
        )
        for description in w.listen:
            self.web_ports.append(await listen_sessions(self.reactor, description, site))

    def _configuration_shown(self) -> list[tuple[str, str, str]]:
        """The settings in force as the admin page shows them, the computed ones said so."""
        return [
            (name, f"{self.web_connections} (computed)", source)
            if name == "[web] max_connections" and value == "(none)"
            else (name, value, source)
            for name, value, source in self.config.shown()
        ]

    def _health(self) -> dict[str, Any]:
        checks: dict[str, Any] = {"store": lambda: self.store_health}
        if self.push_ports or self.udp_ports:
            where = ", ".join(_where(p) for p in [*self.push_ports, *self.udp_ports])
            checks["push listener"] = lambda: (True, where)
        if self.spool is not None:
            limit = self.spool.max_bytes
            checks["spool"] = lambda: self._spool_health(limit)
        if self.poller is not None:
            checks["poll scheduler"] = lambda: (
                True,
                f"{len(self.poller.running_polls)} polls running",
            )
        return checks

    def _spool_health(self, limit: int) -> tuple[bool, str]:
        """Well below 90 % of its limit, and its last replay did not fail (the disk)."""
        problem = getattr(self.acquisition, "replay_problem", None)
        detail = f"{self.spool.depth} pushes waiting, {self.spool.bytes_held:,} bytes"
        if problem:
            detail += f"; replay failed: {problem}"
        return self.spool.bytes_held < 0.9 * limit and not problem, detail

    def _start_failed(self, failure: Any) -> None:
        error = failure.value
        if isinstance(error, SacError):
            self.log.critical("SAC not started: {error}", error=error)
        else:
            self.log.failure("SAC not started: unexpected error", failure)
        self.ready.errback(failure)
        if self.exit_on_failure and not self._stopped:
            self.reactor.addSystemEventTrigger("after", "shutdown", _exit_now, 1)
            self.reactor.stop()

    # --- stop -----------------------------------------------------------------------------

    def _count_errors(self, event: dict[str, Any]) -> None:
        """Every error logged, in ``sac_log_errors_total{level}``: alert on it (a rotated log
        file forgets; the metric does not).  A listener out of file descriptors, which
        Twisted reports at info level only, is made an error here."""
        level = event.get("log_level")
        if level in (LogLevel.error, LogLevel.critical):
            self.metrics.count("sac_log_errors_total", level=level.name)
        elif self._emfile is not None:
            self._emfile.observe(event)

    def stopService(self) -> Deferred[None]:
        self.running = False
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._starting is not None and not self._starting.called:
            self._starting.cancel()
        grace = self.config.sac.stop_grace
        self.log.info("SAC stopping: no new sessions; {g:g} s for those in flight", g=grace)
        for port in [*self.web_ports, *self.push_ports, *self.udp_ports]:
            await port.stopListening()
        cut = await self._drain(grace)
        held = await self._close_parts()
        globalLogPublisher.removeObserver(self._count_errors)  # type: ignore[arg-type]  # as above
        if self._emfile is not None:
            self._emfile.stop()
        self.log.info(
            "SAC stopped cleanly: {cut} sessions (pushes, polls) cut, {held} pushes left on the"
            " spool for the next start",
            cut=cut,
            held=held,
        )

    async def _drain(self, grace: float) -> int:
        """The sessions in flight (pushes, polls) given ``grace`` seconds to finish, side by
        side; how many were cut."""
        cut = 0
        drains: list[Any] = []
        if self.push is not None:
            drains.append(Deferred.fromCoroutine(self.push.drain(grace)))
        if self.poller is not None:
            drains.append(Deferred.fromCoroutine(self.poller.stop(grace)))
        for d in drains:
            result = await d
            cut += result or 0
        return cut

    async def _close_parts(self) -> int:
        """The parts stopped after the sessions, the spool and the store closed last; the
        pushes left on the spool."""
        if self._probe is not None and self._probe.running:
            self._probe.stop()
        if self.housekeeping is not None:
            self.housekeeping.stopService()
        if self.pruning is not None:
            self.pruning.stopService()
        if self.connections is not None:  # the sessions have ended: their last records
            await self.connections.flush()
        if self.acquisition is not None:
            self.acquisition.stop()
        held = 0
        if self.spool is not None:
            held = self.spool.depth
            await self.spool.close()
        if self.store is not None:
            await self.store.close()
        for child in list(self):
            child.running = False
        return held


class _OpenFilesAlarm:
    """A listener that could not accept a connection because the process has no file
    descriptor left (EMFILE, ENFILE: Twisted then accepts and closes what waits, and says so
    at info level): counted in ``sac_open_files_exhausted_total``, and said at error level,
    at most once every :attr:`EVERY` seconds with how many times it happened."""

    EVERY = 10.0
    log = Logger()

    def __init__(self, metrics: Any, reactor: Any) -> None:
        self.metrics = metrics
        self.reactor = reactor
        self.unreported = 0
        self.call: Any = None

    def observe(self, event: dict[str, Any]) -> None:
        text = event.get("log_format") or ""
        if not (
            text.startswith("EMFILE encountered")
            or (
                text.startswith("Could not accept new connection")
                and event.get("acceptError") in ("EMFILE", "ENFILE")
            )
        ):
            return
        self.metrics.count("sac_open_files_exhausted_total")
        self.unreported += 1
        if self.call is None:  # the first at once (after this observer), then in batches
            self.call = self.reactor.callLater(0, self._report)

    def _report(self) -> None:
        count, self.unreported = self.unreported, 0
        if not count:
            self.call = None
            return
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.log.error(
            "out of file descriptors (EMFILE): connections were closed unserved {n} times;"
            " the limit is {limit}: lower [push] max_sessions or [web] max_connections, or"
            " raise LimitNOFILE (docs/operations.md)",
            n=count,
            limit=soft,
        )
        self.call = self.reactor.callLater(self.EVERY, self._report)

    def stop(self) -> None:
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.call = None


def _web_settings(w: Any) -> Any:
    """The web application's settings from the configuration's ``[web]`` section."""
    from sac.web.app import WebSettings

    return WebSettings(
        session_ttl=dt.timedelta(hours=w.session_hours),
        session_lifetime=dt.timedelta(hours=w.session_max_hours),
        secure_cookies=w.secure_cookies,
        name=w.name,
        max_upload=w.max_upload_mb * 2**20,
        metrics_public=w.metrics_public,
        sign_in_failures=w.sign_in_failures,
        password_checks=w.password_checks,
        public_url=w.public_url,
    )


def _from_section(settings: Any, section: Any) -> Any:
    """The ``settings`` dataclass with the values of the configuration's section of the same
    names (its other fields keep their defaults)."""
    names = [f.name for f in dataclasses.fields(settings) if hasattr(section, f.name)]
    return settings(**{name: getattr(section, name) for name in names})


def _where(port: Any) -> str:
    host = port.getHost()
    return f"{host.type.lower()}:{host.host}:{host.port}"


def _exit_now(status: int) -> None:
    """The last thing of a failed start, once the reactor has shut down: twistd has no exit
    status of its own for that, and a service manager must see the failure."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
