"""Failed sign-ins counted by client address: the second wall against guessing passwords.

The store locks one *user* out after 5 wrong passwords in a row.  That
does not stop one address trying a few passwords on each of many users (spraying), nor
one trying names that do not exist -- and every try costs a scrypt check (32 MiB, tens of
milliseconds in a thread).  :class:`SignInThrottle` counts the failures of each address
over a sliding window; past ``allowed`` of them the address's next sign-ins are refused
*before* any password is looked at, until the oldest failure leaves the window.

A sign-in *reserves* its attempt before its password is checked (:meth:`reserve`) and gives
it back after (:meth:`release`, counting a failure or not): the attempts under way count as
failures until they end, so a burst of guesses sent in parallel -- all arriving before any
has failed -- gets no more checks than ``allowed``.  Reserving is synchronous, on the
reactor thread: nothing can slip between the count and the reservation.

Pages (``POST /login``) and SOAP (HTTP Basic, WS-Security UsernameToken) share one throttle.
The address is the TCP peer's (never a header).  Per process: behind a load balancer with
N processes an address gets N times the allowance (docs/security.md).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

__all__ = ["SignInThrottle"]


class SignInThrottle:
    def __init__(
        self,
        allowed: int = 20,
        window: float = 600.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_addresses: int = 100_000,
    ) -> None:
        self.allowed = allowed
        self.window = window
        self.clock = clock
        self.max_addresses = max_addresses
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._running: dict[str, int] = {}  # attempts reserved and not yet released
        self.refusals = 0

    def _recent(self, address: str) -> deque[float] | None:
        times = self._failures.get(address)
        if times is None:
            return None
        horizon = self.clock() - self.window
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            del self._failures[address]
            return None
        return times

    def wait(self, address: str) -> int:
        """Seconds before ``address`` may try again (0: now); a refusal is counted."""
        if not self.allowed:
            return 0  # no limit
        times = self._recent(address)
        if times is None or len(times) < self.allowed:
            return 0
        self.refusals += 1
        return max(1, math.ceil(times[-self.allowed] + self.window - self.clock()))

    def reserve(self, address: str) -> int:
        """Reserve one attempt for ``address``: 0 when reserved (call :meth:`release` after),
        else the seconds to wait (a refusal is counted).  The attempts under way count as
        failures already."""
        if not self.allowed:
            return 0
        times = self._recent(address)
        failures = len(times) if times is not None else 0
        running = self._running.get(address, 0)
        if failures + running < self.allowed:
            self._running[address] = running + 1
            return 0
        self.refusals += 1
        if failures < self.allowed:  # full of attempts under way: they end in a moment
            return 1
        assert times is not None
        return max(1, math.ceil(times[-self.allowed] + self.window - self.clock()))

    def release(self, address: str, failed: bool) -> None:
        """An attempt :meth:`reserve` gave is over; ``failed``: count it as a failure."""
        if not self.allowed:
            return
        running = self._running.get(address, 0) - 1
        if running > 0:
            self._running[address] = running
        else:
            self._running.pop(address, None)
        if failed:
            self.failed(address)

    def failed(self, address: str) -> None:
        if not self.allowed:
            return
        times = self._recent(address)
        if times is None:
            times = self._failures[address] = deque(maxlen=self.allowed)
            if len(self._failures) > self.max_addresses:  # the oldest address forgotten
                self._failures.popitem(last=False)
        else:
            self._failures.move_to_end(address)
        times.append(self.clock())
