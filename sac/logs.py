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
import re
import sys
from collections.abc import Callable
from string import Formatter
from typing import IO, Any

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
)
from twisted.python.logfile import LogFile

__all__ = [
    "configured_observer",
    "json_line",
    "make_observer",
    "message",
    "prepare",
    "text_line",
]

_PLAIN = (str, int, float, bool, type(None))


_second = [-1, ""]  # the last second formatted: most lines share it


def _time(event: dict[str, Any]) -> str:
    when = event.get("log_time")
    if when is None:
        return ""
    second = int(when)
    if second != _second[0]:
        text = dt.datetime.fromtimestamp(second, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second[:] = [second, text]
    return f"{_second[1]}.{int((when - second) * 1000):03d}+00:00"


_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_parsed: dict[str, list[tuple[str, str | None, str, str | None]] | None] = {}
_CONVERT: dict[str, Callable[[object], str]] = {"r": repr, "s": str, "a": ascii}


def _parse(text: str) -> list[tuple[str, str | None, str, str | None]] | None:
    """A format string's parts, when every field is a plain name (else None: Twisted's own
    formatter, which also calls and indexes, does it)."""
    try:
        parts = list(Formatter().parse(text))
    except ValueError:
        return None
    if any(name is not None and not _PLAIN_NAME.match(name) for _, name, _, _ in parts):
        return None
    return parts  # type: ignore[return-value]


def message(event: dict[str, Any]) -> str:
    """``formatEvent(event)``, 3x faster for the usual ``{name:spec}`` fields: a session
    line a push is written 2,000 times a second."""
    text = event.get("log_format")
    if text is None:
        return formatEvent(event)
    try:
        parts = _parsed[text]
    except KeyError:
        parts = _parse(text)
        if len(_parsed) < 10_000:  # format strings are constants of the code
            _parsed[text] = parts
    if parts is None:
        return formatEvent(event)
    out = []
    try:
        for literal, name, spec, conversion in parts:
            out.append(literal)
            if name is not None:
                value = event[name]
                if conversion:
                    value = _CONVERT[conversion](value)
                out.append(format(value, spec or ""))
    except Exception:  # a missing field, a bad spec: Twisted says so in the line
        return formatEvent(event)
    return "".join(out)


def text_line(event: dict[str, Any]) -> str | None:
    """``2026-11-21T09:30:00.125+00:00 [sac.protocols.push.PushProtocol#info] message``, the
    traceback after it (indented) when the event carries a failure: Twisted's classic log
    text."""
    text = message(event)
    failure = event.get("log_failure")
    if failure is not None:
        text = f"{text}\n{failure.getTraceback()}"
    if not text:
        return None
    system = event.get("log_system")
    if system is None:
        level = event.get("log_level")
        system = f"{event.get('log_namespace', '-')}#{getattr(level, 'name', '-')}"
    return f"{_time(event)} [{system}] {text.replace(chr(10), chr(10) + chr(9))}\n"


def json_line(event: dict[str, Any]) -> str | None:
    level = event.get("log_level")
    record: dict[str, Any] = {
        "time": _time(event),
        "level": getattr(level, "name", str(level)),
        "namespace": event.get("log_namespace", ""),
        "message": message(event),
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
    # readable by this user only (0600): log lines name users, addresses and meters
    return LogFile.fromFullPath(
        where, rotateLength=10 * 2**20, maxRotatedFiles=10, defaultMode=0o600
    )


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
