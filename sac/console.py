"""What the console scripts share: run one coroutine on the reactor, errors as one line."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet.defer import ensureDeferred
from twisted.internet.task import react

from sac.errors import SacError

__all__ = ["run_command"]


def run_command(prog: str, command: Callable[[Any], Awaitable[int | None]]) -> int:
    """Run ``command(reactor)`` until it ends; its status (None: 0).  A SAC error, a bad
    value or an OS error is printed as ``prog: message`` with status 1, not a traceback."""
    status = 0

    async def run(reactor: Any) -> None:
        nonlocal status
        try:
            status = (await command(reactor)) or 0
        except (SacError, ValueError, OSError) as exc:
            print(f"{prog}: {exc}", file=sys.stderr)
            status = 1

    try:
        react(lambda reactor: ensureDeferred(run(reactor)))
    except SystemExit as done:
        if done.code:
            return int(done.code)
    return status
