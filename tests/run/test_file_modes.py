"""The files a real ``twistd sac`` makes are readable by its user only, whatever the umask
(issue 18: sac.db and the log file were created 0644): the SQLite store with its -wal and
-shm files (password hashes, wrapped keys), the log file, the spool."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest_twisted

from tests.run.twistd import Twistd
from tests.store.conftest import MASTER


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest_twisted.ensureDeferred
async def test_the_store_the_log_and_the_spool_are_private(tmp_path: Path) -> None:
    log = tmp_path / "sac.log"
    config = tmp_path / "sac.ini"
    config.write_text(
        f"[store]\naddress = sqlite:{tmp_path / 'sac.db'}\n"
        f"[push]\nlisten = tcp:0:interface=127.0.0.1\nspool = {tmp_path / 'spool'}\n"
        "[web]\nlisten = tcp:0:interface=127.0.0.1\n"
        f"[poll]\nenabled = no\n[log]\nformat = json\nfile = {log}\n"
    )
    before = os.umask(0o022)  # the usual one: new files 0644 unless the SAC says otherwise
    try:
        sac = Twistd(
            Path(sys.executable).parent,
            config,
            tmp_path,
            {"SAC_MASTER_KEY": MASTER.secret.hex()},
            log_file=log,
        )
    finally:
        os.umask(before)
    try:
        await sac.wait_for("SAC ready")
        store = [tmp_path / name for name in ("sac.db", "sac.db-wal", "sac.db-shm")]
        spool = tmp_path / "spool"
        files = [*store, log, *spool.iterdir()]
        assert all(path.exists() for path in store), sorted(os.listdir(tmp_path))
        modes = {path.name: oct(mode(path)) for path in files}
        assert all(mode(path) & 0o077 == 0 for path in files), modes
        assert mode(spool) & 0o077 == 0, oct(mode(spool))
        assert await sac.stop() == -15
    finally:
        sac.kill()
    assert mode(log) & 0o077 == 0
