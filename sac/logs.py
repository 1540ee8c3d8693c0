"""Where the SAC's log goes: ``twisted.logger`` events, written as readable text lines (the
default) or as JSON lines, from a level up, to standard output (journald), standard error or
a file.

A JSON line holds the time (UTC, ISO 8601), the level, the namespace, the formatted message,
the event's own fields when they are plain values (text, numbers, booleans) or errors (as
their message), never other objects, so that nothing is written that a log call did not
name; and, for a failure, its traceback.  sac's log calls never name a key, a password or a
token; ``tests/run/test_twistd.py`` reads whole runs' logs for the keys of the meters served.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import IO, Any

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    formatEventAsClassicLogText,
)
from twisted.python.logfile import LogFile

__all__ = ["configured_observer", "json_line", "make_observer", "prepare", "text_line"]

_PLAIN = (str, int, float, bool, type(None))


def _time(event: dict[str, Any]) -> str:
    when = event.get("log_time")
    if when is None:
        return ""
    return dt.datetime.fromtimestamp(when, dt.UTC).isoformat(timespec="milliseconds")


def text_line(event: dict[str, Any]) -> str | None:
    """``2026-11-21T09:30:00.125+00:00 [sac.protocols.push#info] message``, a traceback
    after it when the event carries a failure."""
    return formatEventAsClassicLogText(event, formatTime=lambda t: _time({"log_time": t}))


def json_line(event: dict[str, Any]) -> str | None:
    level = event.get("log_level")
    record: dict[str, Any] = {
        "time": _time(event),
        "level": getattr(level, "name", str(level)),
        "namespace": event.get("log_namespace", ""),
        "message": formatEvent(event),
    }
    for name, value in event.items():
        if name.startswith("log_") or name in record:
            continue
        if isinstance(value, BaseException):
            record[name] = str(value)  # the errors that log lines name (e=exc)
        elif isinstance(value, _PLAIN):
            record[name] = value
    failure = event.get("log_failure")
    if failure is not None:
        record["traceback"] = failure.getTraceback()
        record["error"] = f"{failure.type.__name__}: {failure.getErrorMessage()}"
    return json.dumps(record, ensure_ascii=False, default=str) + "\n"


def _stream(where: str) -> IO[str]:
    if where in ("-", "stdout"):
        return sys.stdout
    if where == "stderr":
        return sys.stderr
    # rotated by size: 10 files of 10 MiB; or let logrotate/journald do it (docs/operations.md)
    return LogFile.fromFullPath(where, rotateLength=10 * 2**20, maxRotatedFiles=10)  # type: ignore[return-value]


def make_observer(format: str = "text", level: str = "info", where: str = "-") -> ILogObserver:
    """An observer writing ``format`` lines of events at ``level`` or above to ``where``."""
    formatter = json_line if format == "json" else text_line
    writer = FileLogObserver(_stream(where), formatter)
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(level))
    return FilteringLogObserver(writer, [predicate])


_prepared: dict[str, str] = {}


def prepare(format: str, level: str, where: str) -> None:
    """Remember what :func:`configured_observer` makes (twistd calls it by name, with no
    arguments, once the options are parsed)."""
    _prepared.update(format=format, level=level, where=where)


def configured_observer() -> ILogObserver:
    return make_observer(**_prepared)
