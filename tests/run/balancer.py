"""HAProxy (Debian's ``/usr/sbin/haproxy``) in ``mode tcp`` in front of push listeners, as a
child process of a test: its configuration written to a folder, run in the foreground
(``-db``), ready once its monitor URI answers (it binds every listener before it serves)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from twisted.internet.threads import deferToThread

__all__ = ["HAPROXY", "Haproxy", "free_port", "haproxy_config"]

HAPROXY = shutil.which("haproxy") or (
    "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else ""
)


def free_port() -> int:
    """A port of 127.0.0.1 free a moment ago (HAProxy cannot say which port 0 gave it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def haproxy_config(
    port: int,
    backends: list[int],
    monitor: int,
    balance: str = "roundrobin",
    maxconn: int = 8000,  # 2 descriptors each: under a limit of 20,000
) -> str:
    """Push sessions on ``port`` spread over the push listeners ``backends`` (TCP as is: the
    SAC sees the balancer's address as the meter's); ``monitor`` answers ``/ready``."""
    servers = "".join(
        f"    server sac{i} 127.0.0.1:{backend}\n" for i, backend in enumerate(backends)
    )
    return (
        f"global\n    maxconn {maxconn}\n"
        "defaults\n    mode tcp\n    timeout connect 5s\n"
        "    timeout client 130s\n    timeout server 130s\n"
        f"frontend push\n    bind 127.0.0.1:{port} backlog 4096\n    default_backend sacs\n"
        f"backend sacs\n    balance {balance}\n{servers}"
        f"frontend monitor\n    mode http\n    bind 127.0.0.1:{monitor}\n"
        "    timeout client 5s\n    monitor-uri /ready\n"
    )


class Haproxy:
    """HAProxy on ``port`` over ``backends``; stop it with :meth:`stop`."""

    def __init__(
        self, folder: Path, port: int, backends: list[int], name: str = "haproxy", **kw: Any
    ) -> None:
        self.port = port
        self.monitor = free_port()
        self.config = folder / f"{name}.cfg"
        self.config.write_text(haproxy_config(port, backends, self.monitor, **kw))
        self.log = folder / f"{name}.log"
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                [HAPROXY, "-f", str(self.config), "-db"],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=folder,
            )

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.monitor), timeout=1) as probe:
                probe.sendall(b"GET /ready HTTP/1.0\r\n\r\n")
                return probe.recv(64).split(b" ")[1:2] == [b"200"]
        except OSError:
            return False

    def wait(self, timeout: float = 20.0) -> None:
        """Blocks until HAProxy serves (a benchmark's call; a test's: :meth:`ready`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            if self._answers():
                return
            time.sleep(0.05)
        raise AssertionError(f"HAProxy never answered:\n{self.log.read_text()}")

    async def ready(self, timeout: float = 20.0) -> None:
        await deferToThread(self.wait, timeout)

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
