"""A PostgreSQL password inside [store] address (issue 18): parsed as libpq reads it (a URI's
``user:secret@`` and ``?password=``, a key=value ``password =``); refused in the file, used
from the environment, and never shown: not by ``twistd sac --check``, not on /admin/system,
not in the log of a real ``twistd sac`` that connects with it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from psycopg2.extensions import parse_dsn

from sac.config import ConfigProblems, load_config
from sac.store import Role
from sac.web.app import Web, WebSettings
from tests.run.twistd import Twistd
from tests.store.conftest import MASTER, Backend, backend, postgres  # noqa: F401 -- fixtures
from tests.web.conftest import FAST, REGISTRY, Site, sqlite  # noqa: F401 -- a fixture

SECRET = "hunter2-Zq9"
ENV = {"SAC_MASTER_KEY": MASTER.secret.hex()}
WITH_PASSWORD = [
    f"postgresql://sac@db.example/sac?password={SECRET}",
    f"postgresql://sac@db.example/sac?sslmode=require&password={SECRET}",
    f"postgres://sac:{SECRET}@db.example:5433/sac",
    f"host=db.example dbname=sac user=sac password={SECRET}",
    f"host=db.example dbname=sac password = '{SECRET}' user=sac",
]


def problems(path: Path | None, env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigProblems) as raised:
        load_config(path, env)
    return raised.value.problems


@pytest.mark.parametrize("address", WITH_PASSWORD)
def test_a_password_in_the_files_address_is_refused_without_repeating_it(
    tmp_path: Path, address: str
) -> None:
    path = tmp_path / "sac.ini"
    path.write_text(f"[store]\naddress = {address}\n")
    [found] = problems(path, ENV)
    assert "holds a password" in found and "SAC_STORE_PASSWORD" in found
    assert SECRET not in found


@pytest.mark.parametrize("address", WITH_PASSWORD)
def test_a_password_in_the_environments_address_is_used_and_never_shown(address: str) -> None:
    config = load_config(None, {**ENV, "SAC_STORE_ADDRESS": address})
    assert parse_dsn(config.store_dsn)["password"] == SECRET  # what the store connects with
    assert parse_dsn(config.store_dsn)["host"] == "db.example"
    assert SECRET not in config.store.address
    shown = "\n".join(" ".join(row) for row in config.shown())
    assert SECRET not in shown and "db.example" in shown
    assert SECRET not in repr(config)
    # the same password in SAC_STORE_PASSWORD too is fine; another is a problem
    same = load_config(None, {**ENV, "SAC_STORE_ADDRESS": address, "SAC_STORE_PASSWORD": SECRET})
    assert parse_dsn(same.store_dsn)["password"] == SECRET
    env = {**ENV, "SAC_STORE_ADDRESS": address, "SAC_STORE_PASSWORD": "Xy-other-7"}
    [found] = problems(None, env)
    assert "give one" in found and SECRET not in found and "Xy-other-7" not in found


def test_an_address_libpq_cannot_read_is_refused_without_repeating_it() -> None:
    [found] = problems(None, {**ENV, "SAC_STORE_ADDRESS": f"dbname=sac password='{SECRET}"})
    assert "libpq" in found and SECRET not in found


def test_twistd_check_shows_no_password(tmp_path: Path) -> None:
    address = f"postgresql://sac:{SECRET}@db.example/sac"
    check = subprocess.run(
        [Path(sys.executable).parent / "twistd", "sac", "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", **ENV, "SAC_STORE_ADDRESS": address},
    )
    assert check.returncode == 0, check.stderr
    assert "[store] address" in check.stdout and "db.example" in check.stdout
    assert SECRET not in check.stdout + check.stderr


@pytest_twisted.ensureDeferred
async def test_the_system_page_shows_no_password(sqlite: Backend) -> None:  # noqa: F811
    address = f"host=db.example dbname=sac password={SECRET}"
    config = load_config(None, {**ENV, "SAC_STORE": address})  # (the older variable)
    store = sqlite.make(password_params=FAST)
    await store.open()
    await store.users.add("ada", "correct horse battery", Role.ADMIN)
    web = Web(
        store,
        REGISTRY,
        settings=WebSettings(secure_cookies=False),
        configuration=list(config.shown()),
    )
    site = Site(store, web)
    admin = await site.signed_in("ada")
    code, _, page = await admin.get("/admin/system")
    assert code == 200 and "db.example" in page
    assert SECRET not in page


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
@pytest_twisted.ensureDeferred
async def test_twistd_connects_with_the_environments_password_and_logs_none(
    backend: Backend,  # noqa: F811
    tmp_path: Path,
) -> None:
    # the server trusts 127.0.0.1, so any password connects: what matters is that it was
    # handed over (libpq would refuse an unparsable address) and is nowhere in the output
    params: dict[str, Any] = dict(parse_dsn(backend.dsn))
    params["password"] = SECRET
    address = " ".join(f"{k}='{v}'" for k, v in params.items())
    config = tmp_path / "sac.ini"
    config.write_text(
        "[push]\nlisten =\n[web]\nlisten = tcp:0:interface=127.0.0.1\n"
        "[poll]\nenabled = no\n[log]\nformat = json\nlevel = debug\n"
    )
    sac = Twistd(
        Path(sys.executable).parent, config, tmp_path, {**ENV, "SAC_STORE_ADDRESS": address}
    )
    try:
        await sac.wait_for("SAC ready")
        assert await sac.stop() == -15
    finally:
        sac.kill()
    assert sac.event("store ready") is not None
    assert SECRET not in sac.output
