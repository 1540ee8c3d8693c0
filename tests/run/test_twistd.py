"""``twistd -n sac`` for real, as an operator runs it: from the source tree (the project's
venv, an editable install) on PostgreSQL, and from the built wheel installed
into a fresh venv on SQLite.  The web answers, simulated meters' pushes are stored, SIGTERM
stops it cleanly, a restart goes on; a bad configuration or a port taken stops it with every
problem said and a non-zero status."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet.defer import Deferred

from sac.store.sqlite import SQLiteStore
from tests.acquisition.conftest import make_fleet, provision, push_once
from tests.run.twistd import Twistd, port
from tests.store.conftest import MASTER, PostgresTestDatabase, postgres  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
ENV = {"SAC_MASTER_KEY": MASTER.secret.hex()}


def write_config(tmp_path: Path, address: str, **extra: str) -> Path:
    sections: dict[str, dict[str, str]] = {
        "store": {"address": address, "connections": "2"},
        "push": {"listen": "tcp:0:interface=127.0.0.1", "spool": str(tmp_path / "spool")},
        "web": {"listen": "tcp:0:interface=127.0.0.1", "secure_cookies": "no"},
        "log": {"format": "json"},
        "sac": {"name": "sac-under-test"},
    }
    for key, value in extra.items():
        section, name = key.split("__")
        sections.setdefault(section, {})[name] = value
    text = "".join(
        f"[{s}]\n" + "".join(f"{k} = {v}\n" for k, v in values.items())
        for s, values in sections.items()
    )
    path = tmp_path / "sac.ini"
    path.write_text(text)
    return path


def check_clean_run(sac: Twistd, code: int, fleet: Any) -> None:
    """Stopped by SIGTERM (twistd ends by re-raising it: systemd's clean stop), after the
    SAC's own "stopped cleanly"; no failure logged; no meter key nor the master key
    anywhere in what it wrote."""
    assert code == -signal.SIGTERM, sac.output
    assert sac.event("SAC stopped cleanly") is not None, sac.output
    assert "Traceback" not in sac.output and "Unhandled" not in sac.output, sac.output
    assert not [e for e in sac.events() if e["level"] in ("error", "critical")], sac.output
    text = sac.output.lower()
    assert MASTER.secret.hex() not in text
    for m in fleet.meters:
        assert m.key.hex() not in text


async def serve_and_push(sac: Twistd, fleet: Any, outcome: str = "read") -> dict[str, Any]:
    """The SAC up, each meter's push acknowledged: ``read`` for a meter's first session
    (its read plan is due), ``stored`` once the plan was read the same day."""
    ready = await sac.wait_for("SAC ready")
    web = f"http://127.0.0.1:{port(ready['web'])}"
    answer = await treq.get(f"{web}/health")
    assert answer.code == 200, await answer.text()
    login = await treq.get(f"{web}/login")
    assert login.code == 200 and "Sign in" in await login.text()
    css = await treq.get(f"{web}/static/sac.css")
    assert css.code == 200 and len(await css.content()) > 1000
    for m in fleet.meters:
        protocol = await push_once(port(ready["push"]), m)
        assert protocol.end_reason.type.__name__ == "ConnectionDone"  # FIN: stored
    for m in fleet.meters:
        line = await sac.wait_for(f"push session from 127.0.0.1, meter {m.ldn}")
        assert line["outcome"] == outcome and isinstance(line["ms"], int)
    return ready


async def run_once(
    bin_dir: Path, config: Path, cwd: Path, fleet: Any, outcome: str = "read"
) -> Twistd:
    """Start twistd sac, push each meter once, stop it with SIGTERM, check the run."""
    sac = Twistd(bin_dir, config, cwd, ENV)
    try:
        await serve_and_push(sac, fleet, outcome)
        code = await sac.stop()
    finally:
        sac.kill()
    check_clean_run(sac, code, fleet)
    return sac


@pytest_twisted.ensureDeferred
async def test_from_the_source_tree_on_postgresql(
    tmp_path: Path,
    postgres: PostgresTestDatabase | str,  # noqa: F811
) -> None:
    if isinstance(postgres, str):
        pytest.skip(postgres)
    where = subprocess.run(
        [VENV_BIN / "python", "-c", "import twisted.plugins.sac_dropin as d; print(d.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout.strip()
    assert Path(where) == ROOT / "twisted" / "plugins" / "sac_dropin.py"
    dsn = postgres.schema_dsn()
    from sac.store.postgres import PostgresStore

    store = PostgresStore(dsn, MASTER, connections=1)
    await store.open()
    fleet = make_fleet(3)
    await provision(store, fleet)
    config = write_config(tmp_path, dsn)
    await run_once(VENV_BIN, config, tmp_path, fleet)
    for m in fleet.meters:
        meter = await store.meters.get(m.ldn)
        assert meter is not None and meter.last_connection is not None
    first = {m.ldn: (await store.meters.get(m.ldn)).last_connection for m in fleet.meters}
    # a restart goes on from there: no migration, the meters' next pushes (counters further
    # on) are stored
    again = await run_once(VENV_BIN, config, tmp_path, fleet, outcome="stored")
    store_ready = again.event("store ready")
    assert store_ready is not None
    assert store_ready["version"] >= 7 and store_ready["migrated"] == ""
    for m in fleet.meters:
        meter = await store.meters.get(m.ldn)
        assert meter is not None and meter.last_connection > first[m.ldn]
    await store.close()


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from this tree, installed with its dependencies into a new venv."""
    where = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [VENV_BIN / "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", where, ROOT],
        check=True,
        cwd=where,
        capture_output=True,
    )
    (wheel,) = where.glob("sac-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "twisted/plugins/sac_dropin.py" in names
    assert not [
        n for n in names if n.startswith("twisted/") and n.endswith(("__init__.py", ".cache"))
    ]
    assert "sac/templates/meters.html" in names and "sac/web/static/sac.css" in names
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    subprocess.run(
        [venv / "bin" / "pip", "install", "-q", "--disable-pip-version-check", wheel],
        check=True,
        cwd=where,
    )
    return venv / "bin"


@pytest.mark.slow
@pytest.mark.xdist_group("source-tree")  # pip builds in the source tree, as test_editable
@pytest_twisted.ensureDeferred
async def test_from_the_wheel_in_a_fresh_venv_on_sqlite(installed: Path, tmp_path: Path) -> None:
    probe = "import sac, twisted.plugins.sac_dropin as d; print(sac.__file__); print(d.__file__)"
    files = subprocess.run(
        [installed / "python", "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout.split()
    assert all(f.startswith(str(installed.parent)) for f in files), files
    database = tmp_path / "sac.db"
    store = SQLiteStore(database, MASTER)
    await store.open()
    fleet = make_fleet(2)
    await provision(store, fleet)
    await store.close()
    await run_once(installed, write_config(tmp_path, f"sqlite:{database}"), tmp_path, fleet)
    with sqlite3.connect(database) as db:
        stored = db.execute("SELECT COUNT(*) FROM meters WHERE last_connection IS NOT NULL")
        assert stored.fetchone()[0] == 2
        assert db.execute("SELECT COUNT(*) FROM readings").fetchone()[0] > 0


def test_a_bad_configuration_is_reported_whole_and_nothing_starts(tmp_path: Path) -> None:
    config = tmp_path / "sac.ini"
    config.write_text(
        "[push]\nlisten = tcp:4059\nmax_pdu = big\n[web]\nport = 8080\n[log]\nlevel = chatty\n"
        "[store]\nmaster_key = 00\n"
    )
    done = subprocess.run(
        [VENV_BIN / "twistd", "-n", "--pidfile=", "sac", "--config", config],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 1
    assert done.stderr.startswith("sac: the configuration has 5 problems:"), done.stderr
    for expected in (
        "[push] max_pdu",
        "unknown setting [web] port",
        "[log] level",
        "[store] master_key: a secret does not belong",
        "no master key",
    ):
        assert expected in done.stderr
    assert not (tmp_path / "sac.db").exists() and not (tmp_path / "spool").exists()
    check = subprocess.run(
        [VENV_BIN / "twistd", "sac", "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", **ENV, "SAC_WEB_NAME": "Checked"},
    )
    assert check.returncode == 0, check.stderr
    assert "[web] name" in check.stdout and "environment SAC_WEB_NAME" in check.stdout
    assert MASTER.secret.hex() not in check.stdout


@pytest_twisted.ensureDeferred
async def test_a_port_taken_ends_the_start_with_status_1(tmp_path: Path) -> None:
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        busy = taken.getsockname()[1]
        config = write_config(
            tmp_path, f"sqlite:{tmp_path / 'sac.db'}", web__listen=f"tcp:{busy}:interface=127.0.0.1"
        )
        sac = Twistd(VENV_BIN, config, tmp_path, ENV)
        try:
            failed = await sac.wait_for("SAC not started")
            code = await deferred_wait(sac)
        finally:
            sac.kill()
    finally:
        taken.close()
    assert code == 1, sac.output
    assert f"tcp:{busy}:interface=127.0.0.1" in failed["error"]
    assert sac.event("SAC stopped cleanly") is not None  # the store it had opened is closed


def deferred_wait(sac: Twistd) -> Deferred[int]:
    from twisted.internet.threads import deferToThread

    return deferToThread(sac.process.wait, 30)
