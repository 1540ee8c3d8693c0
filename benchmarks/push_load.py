"""The load generator of ``benchmarks/bench_push.py`` (``push_sac.py load``): the simulated
meters' frames built in advance, sessions driven over one epoll with plain non-blocking sockets.

Two populations in one fleet: the first ``hot`` meters push again and again (frame k of a
meter is its push at ``base + k`` UNIX seconds), the ``cold`` ones after them push once each,
the fleet's real shape (a meter pushes once a day: the SAC has not seen it for hours).
"""

from __future__ import annotations

import argparse
import collections
import errno
import json
import os
import select
import socket
import sys
import time
from typing import Any

from push_sac import TEMPLATE, make_fleet, raise_nofile, reply

# --- the load: pre-built frames, plain sockets, one epoll -----------------------------------


class Frames:
    """Each meter's push frames, in counter order: frame k of a meter is its push at
    ``base + k`` UNIX seconds with its k-th invocation counter after the first."""

    def __init__(self, hot: int, cold: int = 0) -> None:
        self.base = int(time.time())
        self._now = float(self.base)
        self.fleet = make_fleet(hot + cold, lambda: self._now)
        self.meters = self.fleet.meters
        self.ldns = [m.ldn for m in self.meters]
        self.frames: list[list[bytes]] = [[] for _ in self.meters]
        self.built_late = 0  # frames built during a measure (the supply ran out)
        self.ranges = {"hot": range(0, hot), "cold": range(hot, hot + cold)}

    def split_cold(self, parts: int) -> None:
        """The cold meters in ``parts`` populations ``cold0``, ``cold1``...: one a measure,
        so that no measure sees a meter an earlier one made known to a SAC."""
        cold = self.ranges["cold"]
        size = len(cold) // parts
        for n in range(parts):
            self.ranges[f"cold{n}"] = range(cold.start + n * size, cold.start + (n + 1) * size)

    def build(self, i: int) -> bytes:
        from sac.dlms.axdr import OctetString
        from sac.dlms.security import SecurityContext, Suite0Cipher
        from sac.dlms.server import ServerAssociation
        from sac.simulator.meter import MANAGEMENT

        m, frames = self.meters[i], self.frames[i]
        self._now = float(self.base + len(frames))
        m.advance()
        buffer = m.compact_buffer(TEMPLATE)
        security = SecurityContext(
            Suite0Cipher(m.key), m.system_title, invocation_counter=m.our_counter
        )
        association = ServerAssociation(m, MANAGEMENT, 1, security=security, pre_established=True)
        association.notify(OctetString(buffer))
        m.our_counter = security.invocation_counter
        frame = association.data_to_send()
        frames.append(frame)
        return frame

    def rounds(self, count: int, population: str = "hot") -> int:
        """``count`` frames for each meter of a population; the frames built."""
        for _ in range(count):
            for i in self.ranges[population]:
                self.build(i)
        return count * len(self.ranges[population])

    def get(self, i: int, k: int, cycle: bool) -> bytes:
        frames = self.frames[i]
        if k < len(frames):
            return frames[k]
        if cycle:
            return frames[k % len(frames)]
        while len(frames) <= k:
            self.build(i)
            self.built_late += 1
        return frames[k]


EPOLLIN, EPOLLOUT = select.EPOLLIN, select.EPOLLOUT
DRAIN = 60.0  # seconds a timed run waits for its sessions in flight after its end
BROKEN = select.EPOLLERR | select.EPOLLHUP


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def sessions(
    frames: Frames,
    cursor: list[int],
    port: int,
    *,
    seconds: float = 0.0,
    count: int = 0,
    concurrency: int,
    cycle: bool,
    record: str | None = None,
    rate: float = 0.0,
    population: str = "hot",
) -> dict[str, Any]:
    """Push sessions for ``seconds`` (or ``count`` sessions), each meter one session at a
    time in turn: connect, send its next frame, wait for the close.  A clean close (FIN) is
    an acknowledgement; a reset is a refusal.

    Closed loop (``rate`` 0): ``concurrency`` sessions at once, a new one as soon as one
    ends -- the most the server takes.  Open loop (``rate`` > 0): sessions start at
    ``rate`` a second whatever the server does, as meters calling in do (``concurrency``
    only caps them); a session's time counts from when it was due, so a server that falls
    behind shows it in the percentiles instead of slowing the arrivals.

    ``population`` "hot": the first meters, each again as soon as its session ends; "cold":
    each meter of the rest once at most (the run ends early when every one has pushed);
    "cold0", "cold1"...: a part of them (:meth:`Frames.split_cold`), the same way."""
    address = ("127.0.0.1", port)
    poller = select.epoll()
    once = population.startswith("cold")
    idle = collections.deque(frames.ranges[population])
    live: dict[int, list[Any]] = {}  # fd: [socket, meter, k, start, frame not sent yet]
    latencies: list[float] = []
    acked: list[tuple[int, int]] = []
    refused = failed = started = unfinished = 0
    clock = time.perf_counter
    cpu0 = time.process_time()
    begin = clock()
    deadline = begin + seconds if seconds else float("inf")
    due = begin  # open loop: when the next session is due
    gap = 1.0 / rate if rate else 0.0

    def finish(fd: int, entry: list[Any]) -> None:
        poller.unregister(fd)
        entry[0].close()
        del live[fd]
        if not once:
            idle.append(entry[1])

    while True:
        now = clock()
        while (
            len(live) < concurrency
            and idle
            and (now < deadline if seconds else started < count)
            and (not rate or due <= now)
        ):
            i = idle.popleft()
            k = cursor[i]
            cursor[i] = k + 1
            frame = frames.get(i, k, cycle)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            started += 1
            t0 = due if rate else clock()
            due += gap
            err = sock.connect_ex(address)
            if err not in (0, errno.EINPROGRESS):
                sock.close()
                failed += 1
                if not once:
                    idle.append(i)
                continue
            fd = sock.fileno()
            live[fd] = [sock, i, k, t0, frame]
            poller.register(fd, EPOLLOUT)
            now = clock()
        if live and seconds and now > deadline + DRAIN:
            unfinished = len(live)  # given up on: counted, not waited for
            for fd, entry in list(live.items()):
                finish(fd, entry)
            break
        if not live:
            if not idle or (seconds and clock() >= deadline) or (not seconds and started >= count):
                break
            if not rate:
                continue
        wait = min(0.5, max(0.001, due - clock())) if rate else 0.5
        for fd, event in poller.poll(wait):
            entry = live[fd]
            sock = entry[0]
            if entry[4] is not None:  # connecting
                if event & BROKEN and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    failed += 1
                    finish(fd, entry)
                    continue
                try:
                    sock.send(entry[4])
                except OSError:
                    failed += 1
                    finish(fd, entry)
                    continue
                entry[4] = None
                poller.modify(fd, EPOLLIN)
                continue
            try:
                data = sock.recv(4096)
            except OSError:
                data = None
            if data:
                continue  # the SAC said something (no command waits: it should not)
            end = clock()
            finish(fd, entry)
            if data is None:
                refused += 1
            else:
                latencies.append(end - entry[3])
                acked.append((entry[1], entry[2]))
    elapsed = clock() - begin
    cpu = time.process_time() - cpu0
    poller.close()
    if record:
        with open(record, "a") as out:
            out.writelines(f"{frames.ldns[i]}\t{frames.base + k}\n" for i, k in acked)
    return {
        "ok": len(acked),
        "refused": refused,
        "failed": failed,
        "unfinished": unfinished,
        "elapsed": elapsed,
        "load_cpu": cpu,
        "p50": percentile(latencies, 0.50),
        "p99": percentile(latencies, 0.99),
        "max": max(latencies, default=float("nan")),
        "built_late": frames.built_late,
        "exhausted": once and not idle,  # every cold meter has pushed
    }


class Idle:
    """Connections opened and left silent: how many the SAC accepts and keeps."""

    def __init__(self) -> None:
        self.poller = select.epoll()
        self.held: dict[int, socket.socket] = {}
        self.closed: set[int] = set()

    def open(self, port: int, count: int, at_once: int = 500) -> dict[str, Any]:
        address = ("127.0.0.1", port)
        connecting: dict[int, socket.socket] = {}
        failed = opened = 0
        begin = time.perf_counter()
        while opened < count or connecting:
            while opened < count and len(connecting) < at_once:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                opened += 1
                if sock.connect_ex(address) not in (0, errno.EINPROGRESS):
                    sock.close()
                    failed += 1
                    continue
                connecting[sock.fileno()] = sock
                self.poller.register(sock.fileno(), EPOLLOUT)
            for fd, _event in self.poller.poll(1.0):
                sock = connecting.pop(fd, None)
                if sock is None:
                    self.closed.add(fd)  # a held one that moved
                    self.poller.unregister(fd)
                    continue
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    self.poller.unregister(fd)
                    sock.close()
                    failed += 1
                    continue
                self.held[fd] = sock
                self.poller.modify(fd, EPOLLIN | select.EPOLLRDHUP)
        return {"held": len(self.held), "failed": failed, "seconds": time.perf_counter() - begin}

    def check(self) -> dict[str, Any]:
        for fd, _event in self.poller.poll(0):
            self.closed.add(fd)  # data, FIN or reset: no longer an idle open connection
            self.poller.unregister(fd)
        return {"open": len(self.held) - len(self.closed), "closed": len(self.closed)}

    def release(self) -> dict[str, Any]:
        for sock in self.held.values():
            sock.close()
        n = len(self.held)
        self.held.clear()
        self.closed.clear()
        return {"released": n}


def load(args: argparse.Namespace) -> None:
    nofile = raise_nofile()
    start, cpu0 = time.perf_counter(), time.process_time()
    frames = Frames(args.meters, args.cold)
    fleet_seconds = time.perf_counter() - start
    built = frames.rounds(args.rounds, "hot") + frames.rounds(1 if args.cold else 0, "cold")
    if args.cold_parts > 1:
        frames.split_cold(args.cold_parts)
    cpu = time.process_time() - cpu0
    reply(
        {
            "pid": os.getpid(),
            "nofile": nofile,
            "frames": built,
            "seconds": time.perf_counter() - start,
            "fleet_seconds": fleet_seconds,
            "us_per_frame": cpu / max(built, 1) * 1e6,
            "frame_bytes": len(frames.frames[0][0]),
        }
    )
    cursors: dict[str, list[int]] = {}
    idle = Idle()
    for line in sys.stdin:
        command = json.loads(line)
        op = command.pop("op")
        if op == "sessions":
            cursor = cursors.setdefault(command.pop("cursor"), [0] * len(frames.meters))
            reply(sessions(frames, cursor, **command))
        elif op == "idle-open":
            reply(idle.open(**command))
        elif op == "idle-check":
            reply(idle.check())
        elif op == "idle-release":
            reply(idle.release())
        else:
            reply({"error": f"unknown command {op!r}"})
