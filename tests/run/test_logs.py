"""The log lines: text as Twisted's classic format writes it (our faster formatter gives the
same text), JSON lines with plain fields only, and the level filter."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from twisted.logger import LogLevel, formatEventAsClassicLogText
from twisted.python.failure import Failure

from sac.logs import json_line, make_observer, text_line


class Point:
    x = 3


def event(fmt: str | None, **fields: Any) -> dict[str, Any]:
    return {
        "log_format": fmt,
        "log_level": LogLevel.warn,
        "log_namespace": "sac.protocols.push.PushProtocol",
        "log_time": 1_795_269_000.125,
        **fields,
    }


def classic(e: dict[str, Any]) -> str | None:
    from sac.logs import _time

    return formatEventAsClassicLogText(e, formatTime=lambda t: _time({"log_time": t}))


def failure() -> Failure:
    try:
        raise ValueError("boom")
    except ValueError:
        return Failure()


CASES = [
    event("push session from {peer}, meter {ldn}: {outcome} in {ms} ms{why}",
          peer="10.1.2.3", ldn="SIM0000000000001", outcome="stored", ms=84, why=""),
    event("next in {d:.0f} s; {g:g} s grace; {n:,} rows", d=119.6, g=10.0, n=1234567),
    event("{e!r} and {e!s} and {{braces}}", e=ValueError("x")),
    event("an attribute {p.x} and a call {f()}", p=Point(), f=lambda: "called"),
    event("a field {missing} not given"),
    event("a bad spec {n:zz}", n=5),
    event("two\nlines"),
    event("unexpected error", log_failure=failure()),
    event(None, log_system="-", log_text="a legacy line"),
    {**event("legacy {x}", x=1), "log_system": "-"},
]  # fmt: skip


@pytest.mark.parametrize("e", CASES)
def test_text_lines_are_twisted_classic_text(e: dict[str, Any]) -> None:
    assert text_line(e) == classic(e)


def test_json_lines_carry_plain_fields_and_errors_as_text() -> None:
    line = json_line(
        event("{who} failed: {e}", who="meter", e=ValueError("bad tag"), obj=object(), n=3)
    )
    assert line is not None and line.endswith("\n") and line.count("\n") == 1
    record = json.loads(line)
    assert record == {
        "time": "2026-11-21T13:50:00.125+00:00",
        "level": "warn",
        "namespace": "sac.protocols.push.PushProtocol",
        "message": "meter failed: bad tag",
        "who": "meter",
        "e": "bad tag",
        "n": 3,
    }
    with_failure = json.loads(json_line(event("oops", log_failure=failure())) or "")
    assert with_failure["error"] == "ValueError: boom" and "Traceback" in with_failure["traceback"]


def test_the_level_filter_and_the_file(tmp_path: Path) -> None:
    path = tmp_path / "sac.log"
    observer = make_observer("json", "warn", str(path))
    for level in (LogLevel.debug, LogLevel.info, LogLevel.warn, LogLevel.error):
        observer({**event("at {lvl}", lvl=level.name), "log_level": level, "log_time": time.time()})
    written = [json.loads(line)["message"] for line in path.read_text().splitlines()]
    assert written == ["at warn", "at error"]
