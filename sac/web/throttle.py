"""Failed sign-ins counted by client address: the second wall against guessing passwords.

The store locks one *user* out after 5 wrong passwords in a row (``LoginLocked``).  That
does not stop one address trying a few passwords on each of many users (spraying), nor
one trying names that do not exist -- and every try costs a scrypt check (32 MiB, tens of
milliseconds in a thread).  :class:`SignInThrottle` counts the failures of each address
over a sliding window; past ``allowed`` of them the address's next sign-ins are refused
*before* any password is looked at, until the oldest failure leaves the window.

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
