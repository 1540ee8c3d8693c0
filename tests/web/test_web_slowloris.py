"""A web slowloris against a real ``twistd sac`` limited to 1,200 open files (issue 18): the
attacker keeps 1,200 connections to the web port open, each dribbling its headers a byte a
second and reconnecting whenever the SAC closes it, while meters push.  Before, the web
listener took every descriptor and the meters' pushes were reset ("EMFILE recovery", at info
level only).  Now the web port holds at most [web] max_connections (computed from the limit),
the header deadline cuts each dribbler, and every push is acknowledged and stored."""

from __future__ import annotations

import errno
import socket
import sys
import threading
import time
from pathlib import Path

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults
from twisted.internet.error import ConnectionDone
from twisted.internet.task import deferLater

from sac.dlms import Obis
from tests.acquisition.conftest import Backend, make_fleet, provision, push_once
from tests.promtext import metric
from tests.run.twistd import Twistd, port
from tests.store.conftest import MASTER

# a real twistd and 1,200 real sockets, for seconds
pytestmark = pytest.mark.slow

INDEX = Obis("7.0.13.2.0.255")
OPEN_FILES = 1200
MAX_SESSIONS = 300
LORIS = 1200
METERS = 60
REQUEST = b"GET /meters HTTP/1.1\r\nHost: sac.test\r\nX-Slow: " + b"s" * 500 + b"\r\n\r\n"


class WebLoris:
    """``count`` connections to ``port``, each sending one byte of a request a second, made
    again whenever the server closes one; in a thread of its own (plain sockets)."""

    def __init__(self, port: int, count: int) -> None:
        self.port, self.count = port, count
        self.sockets: list[tuple[socket.socket, int]] = []  # (socket, bytes sent)
        self.made = 0
        self.cut = 0  # closed by the server after some bytes: mid-request
        self.answered = 0  # got any byte back: an answer to a request never completed
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.running = False
        self.thread.join(30)
        for sock, _ in self.sockets:
            sock.close()

    def _connect(self) -> socket.socket | None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(0.25)
        try:
            sock.connect(("127.0.0.1", self.port))
        except OSError:
            sock.close()
            return None
        sock.setblocking(False)
        self.made += 1
        return sock

    def _run(self) -> None:
        while self.running:
            kept = []
            for sock, sent in self.sockets:
                try:
                    peek = sock.recv(1, socket.MSG_PEEK)
                except BlockingIOError:
                    peek = None
                except OSError:
                    peek = b""
                if peek is None:
                    try:
                        if sent < len(REQUEST):
                            sock.send(REQUEST[sent : sent + 1])
                            sent += 1
                        kept.append((sock, sent))
                        continue
                    except BlockingIOError:
                        kept.append((sock, sent))
                        continue
                    except OSError as exc:
                        if exc.errno not in (errno.EPIPE, errno.ECONNRESET):
                            raise
                elif peek:
                    self.answered += 1
                if sent:
                    self.cut += 1
                sock.close()
            self.sockets = kept
            while self.running and len(self.sockets) < self.count:
                sock = self._connect()
                if sock is None:
                    break
                self.sockets.append((sock, 0))
            time.sleep(1.0)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
@pytest_twisted.ensureDeferred
async def test_a_web_slowloris_does_not_starve_the_meters(backend: Backend, tmp_path: Path) -> None:
    store = backend.make()
    await store.open()
    fleet = make_fleet(METERS)
    await provision(store, fleet)
    config = tmp_path / "sac.ini"
    config.write_text(
        f"[store]\naddress = {backend.dsn}\n"
        "[push]\nlisten = tcp:0:interface=127.0.0.1:backlog=1024\n"
        f"spool = {tmp_path / 'spool'}\nmax_sessions = {MAX_SESSIONS}\n"
        "[web]\nlisten = tcp:0:interface=127.0.0.1\nheader_timeout = 3\n"
        "[poll]\nenabled = no\n[log]\nformat = json\n"
    )
    env = {"SAC_MASTER_KEY": MASTER.secret.hex()}
    sac = Twistd(Path(sys.executable).parent, config, tmp_path, env, open_files=OPEN_FILES)
    loris = None
    try:
        ready = await sac.wait_for("SAC ready")
        push_port, web_port = port(ready["push"]), port(ready["web"])
        limits = await sac.wait_for("web: at most")
        assert limits["n"] < OPEN_FILES - MAX_SESSIONS  # computed from the limit
        loris = WebLoris(web_port, LORIS)
        loris.start()
        for _ in range(600):  # the attack is on: the web port is full, the dribblers cut
            if loris.made >= LORIS and loris.cut >= 10:
                break
            await deferLater(reactor, 0.1, lambda: None)
        assert loris.made >= LORIS and loris.cut >= 10, (loris.made, loris.cut)

        limit = DeferredSemaphore(10)
        sessions = await gatherResults(
            [
                limit.run(lambda m=m: Deferred.fromCoroutine(push_once(push_port, m)))
                for m in fleet.meters
            ]
        )
        assert loris.running and loris.thread.is_alive()  # the attack went on meanwhile
        assert all(s.end_reason.check(ConnectionDone) for s in sessions)  # acknowledged
        for m in fleet.meters:
            assert await store.readings.last(m.ldn, INDEX), m.ldn  # and stored
        loris.stop()
        assert loris.answered == 0  # no dribbled request was ever answered

        web = f"http://127.0.0.1:{web_port}"
        text = ""
        for _ in range(100):  # once the last dribblers are gone, the web answers again
            try:
                answer = await treq.get(f"{web}/metrics", persistent=False)
                text = await answer.text()
                break
            except Exception:
                await deferLater(reactor, 0.1, lambda: None)
        # (whether the dribblers outnumbered the cap at one moment depends on how fast this
        # machine let them connect: the cap itself is proven in test_listener.py)
        assert metric(text, "sac_web_closed_total", reason="header-timeout") > 0
        assert metric(text, "sac_push_sessions_total", outcome="read") == METERS
        assert metric(text, "sac_open_files_exhausted_total") == 0
        code = await sac.stop()
    finally:
        if loris is not None and loris.running:
            loris.stop()
        sac.kill()
    assert code == -15 and sac.event("SAC stopped cleanly") is not None, sac.output
    assert "Traceback" not in sac.output and "EMFILE" not in sac.output


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
@pytest_twisted.ensureDeferred
async def test_running_out_of_file_descriptors_is_an_error_and_a_metric(
    backend: Backend, tmp_path: Path
) -> None:
    """Limits set too high for the open-files limit: a warning at start; then descriptors
    run out, which Twisted says at info level only: the SAC counts it and logs an error."""
    store = backend.make()
    await store.open()
    config = tmp_path / "sac.ini"
    config.write_text(
        f"[store]\naddress = {backend.dsn}\n[push]\nlisten =\n"
        "[web]\nlisten = tcp:0:interface=127.0.0.1\nmax_connections = 2000\n"
        "[poll]\nenabled = no\n[log]\nformat = json\n"
    )
    env = {"SAC_MASTER_KEY": MASTER.secret.hex()}
    sac = Twistd(Path(sys.executable).parent, config, tmp_path, env, open_files=400)
    loris = None
    try:
        ready = await sac.wait_for("SAC ready")
        warning = sac.event("open files limited to 400")
        assert warning is not None and warning["level"] == "warn"
        loris = WebLoris(port(ready["web"]), 600)
        loris.start()
        error = await sac.wait_for("out of file descriptors (EMFILE)")
        assert error["level"] == "error" and error["n"] >= 1
        loris.stop()
        web = f"http://127.0.0.1:{port(ready['web'])}"
        answer = await treq.get(f"{web}/metrics", persistent=False)
        text = await answer.text()
        assert metric(text, "sac_open_files_exhausted_total") >= error["n"]
        assert metric(text, "sac_log_errors_total", level="error") >= 1
        await sac.stop()
    finally:
        if loris is not None and loris.running:
            loris.stop()
        sac.kill()
    assert "Traceback" not in sac.output
