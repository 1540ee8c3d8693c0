"""``twistd -n sac`` as a child process of a test: its JSON log lines collected as they come,
waited for without blocking the reactor."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread


class Twistd:
    def __init__(
        self,
        bin_dir: Path,
        config: Path,
        cwd: Path,
        env: dict[str, str],
        log_file: Path | None = None,  # where [log] file sends the JSON lines, if not stdout
        open_files: int | None = None,  # the child's RLIMIT_NOFILE (soft and hard), if set
    ) -> None:
        self.log_file = log_file
        self.command = [
            str(bin_dir / "twistd"),
            "-n",
            "--pidfile=",
            "sac",
            "--config",
            str(config),
        ]
        clean = {k: v for k, v in os.environ.items() if not k.startswith("SAC_")}
        clean.pop("PYTHONPATH", None)
        self.process = subprocess.Popen(
            self.command,
            cwd=cwd,
            env={**clean, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=None if open_files is None else lambda: _limit_files(open_files),
        )
        self.lines: list[str] = []
        self.errors: list[str] = []
        self._readers = [
            threading.Thread(
                target=self._read, args=(self.process.stdout, self.lines), daemon=True
            ),
            threading.Thread(
                target=self._read, args=(self.process.stderr, self.errors), daemon=True
            ),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines) + "".join(self.errors)

    def events(self) -> list[dict[str, Any]]:
        """The JSON log lines so far (twistd's own first lines are JSON too: the observer is
        ours from the start)."""
        found = []
        if self.log_file is not None:
            lines = self.log_file.read_text().splitlines() if self.log_file.exists() else []
        else:
            lines = list(self.lines)
        for line in lines:
            if line.startswith("{"):
                found.append(json.loads(line))
        return found

    def event(self, message_start: str) -> dict[str, Any] | None:
        return next((e for e in self.events() if e["message"].startswith(message_start)), None)

    async def wait_for(self, message_start: str, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.event(message_start)
            if found is not None:
                return found
            if self.process.poll() is not None:
                break
            await deferLater(reactor, 0.05, lambda: None)
        raise AssertionError(f"no {message_start!r} in the log:\n{self.output}")

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        self.process.send_signal(sig)
        code = await deferToThread(self.process.wait, timeout)
        for reader in self._readers:
            await deferToThread(reader.join, 5)
        return int(code)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def _limit_files(count: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))


def port(address: str) -> int:
    """The port of ``tcp:127.0.0.1:PORT`` as the ready line names it."""
    return int(address.rsplit(":", 1)[1])
