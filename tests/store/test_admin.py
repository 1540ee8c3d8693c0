"""``sac-admin`` run as operators run it: a process, on a real store of each backend."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import pytest_twisted

from sac.errors import ConfigurationError
from sac.keys import MasterKey
from sac.store import NewMeter, Role
from sac.store.keycsv import SAMPLE
from tests.store.conftest import MASTER, Backend

NEW = MasterKey.from_text("33" * 32)


def admin(
    backend: Backend, *args: str, stdin: str = "", **env: str
) -> subprocess.CompletedProcess[str]:
    address = backend.dsn if backend.kind == "postgresql" else str(backend.path)
    environ = {**os.environ, "SAC_MASTER_KEY": MASTER.secret.hex(), "SAC_STORE": address, **env}
    return subprocess.run(
        [sys.executable, "-m", "sac.admin", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
        check=False,
    )


@pytest_twisted.ensureDeferred
async def test_sac_admin_imports_keys_rotates_the_master_key_and_adds_users(
    backend: Backend, tmp_path
) -> None:
    new_key = admin(backend, "new-master-key")
    assert new_key.returncode == 0 and re.fullmatch(r"[0-9a-f]{64}\n", new_key.stdout)
    migrated = admin(backend, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.startswith("schema version 0 -> ")

    store = backend.make()
    await store.open()
    for ldn in ("FIO0000012345678", "FIO0000012345679"):
        await store.meters.add(NewMeter(ldn))
    await store.close()

    bad = tmp_path / "bad.csv"
    bad.write_text(SAMPLE + "FIO0000012345670,1,00zz,\n")
    refused = admin(backend, "import-keys", str(bad))
    assert refused.returncode == 1
    assert (
        f"{bad}: line 4: EK is not hex" in refused.stderr and "nothing imported" in refused.stderr
    )
    good = tmp_path / "keys.csv"
    good.write_text(SAMPLE)
    imported = admin(backend, "import-keys", str(good))
    assert imported.returncode == 0 and "2 keys imported" in imported.stdout, imported.stderr

    no_new = admin(backend, "rotate-master-key")
    assert no_new.returncode == 1 and "SAC_NEW_MASTER_KEY" in no_new.stderr
    rotated = admin(backend, "rotate-master-key", SAC_NEW_MASTER_KEY=NEW.secret.hex())
    assert rotated.returncode == 0, rotated.stderr
    assert f"4 wrapped keys (EK, AK) re-wrapped under master key {NEW.id_hex}" in rotated.stdout

    old_key = admin(backend, "add-user", "root", "--role", "admin", stdin="a long password\n")
    assert old_key.returncode == 1 and "wrong key" in old_key.stderr
    added = admin(
        backend,
        "create-user",  # the name the web issue gives it, an alias
        "root",
        "--role",
        "admin",
        stdin="a long password\n",
        SAC_MASTER_KEY=NEW.secret.hex(),
    )
    assert added.returncode == 0, added.stderr
    # the old master key no longer opens the store; the new one does, and reads the keys
    old = backend.make()
    with pytest.raises(ConfigurationError, match="wrong key"):
        await old.open()
    store = backend.make(NEW)
    await store.open()
    assert (await store.keys.get("FIO0000012345678", 1)).ek == bytes.fromhex(
        "4D5944554D4D59474C4F42414C4B4559"
    )
    user = await store.users.authenticate("root", "a long password")
    assert user is not None and user.role is Role.ADMIN
    actions = [(e.action, e.actor.startswith("sac-admin (")) for e in await store.audit.log()]
    assert actions == [
        ("sign-in", False),
        ("add user", True),
        ("rotate master key", True),
        ("import keys", True),
    ]
    # a wrong store address is a clear error, not a traceback
    nowhere = admin(backend, "migrate", SAC_STORE="/nonexistent/dir/sac.db")
    assert nowhere.returncode == 1 and nowhere.stderr.startswith("sac-admin: ")


@pytest_twisted.ensureDeferred
async def test_sac_admin_makes_and_revokes_api_tokens(backend: Backend) -> None:
    store = backend.make()
    await store.open()
    await store.users.add("erp", "a long password", Role.OPERATOR)
    await store.close()

    made = admin(backend, "create-token", "erp", "ERP provisioning")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert re.fullmatch(r"sac_[A-Za-z0-9_-]{40,}", secret) and made.stdout.count("\n") == 1
    assert "API token #1 'ERP provisioning' acts as erp (operator)" in made.stderr
    assert secret not in made.stderr
    nobody = admin(backend, "create-token", "nobody", "x")
    assert nobody.returncode == 1 and nobody.stderr.startswith("sac-admin: ")
    assert "nobody" in nobody.stderr and "Traceback" not in nobody.stderr

    store = backend.make()
    await store.open()
    token = await store.tokens.get(secret)
    assert token is not None and (token.id, token.user.name) == (1, "erp")
    await store.close()

    revoked = admin(backend, "revoke-token", "1")
    assert revoked.returncode == 0 and "API token #1 revoked" in revoked.stdout, revoked.stderr
    unknown = admin(backend, "revoke-token", "7")
    assert unknown.returncode == 1 and "sac-admin: no API token #7" in unknown.stderr
    store = backend.make()
    await store.open()
    assert await store.tokens.get(secret) is None
    actions = [
        (e.action, e.target, e.actor.startswith("sac-admin (")) for e in await store.audit.log()
    ]
    assert actions[:2] == [("revoke API token", "#1", True), ("create API token", "erp", True)]


def test_sac_admin_finds_the_store_and_its_secrets_as_the_sac_does(
    backend: Backend, tmp_path
) -> None:
    """--config: the store's address, the master key file and (PostgreSQL) the password
    file of sac.ini, with no SAC_* in the environment; nothing at all: a clear error."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SAC_")}
    key_file = tmp_path / "master.key"
    key_file.write_text(MASTER.secret.hex())
    address = backend.dsn if backend.kind == "postgresql" else f"sqlite:{backend.path}"
    password = tmp_path / "password"
    password.write_text("not needed: trust")  # libpq ignores it where trust needs none
    config = tmp_path / "sac.ini"
    config.write_text(
        f"[store]\naddress = {address}\nmaster_key_file = {key_file}\npassword_file = {password}\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "sac.admin", "--config", str(config), "add-user", "rita",
         "--role", "viewer"],
        input="rita's password\n", capture_output=True, text=True, env=clean, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "user rita (viewer) added" in run.stdout
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    lost = subprocess.run(
        [sys.executable, "-m", "sac.admin", "migrate"],
        capture_output=True, text=True, env=clean, timeout=60, cwd=elsewhere,
    )  # fmt: skip
    assert lost.returncode == 1
    assert "which store?" in lost.stderr and not list(elsewhere.iterdir())


@pytest_twisted.ensureDeferred
async def test_sac_admin_resets_a_meters_counters_after_a_key_change_in_the_field(
    backend: Backend,
) -> None:
    store = backend.make()
    await store.open()
    await store.meters.add(NewMeter("RESET00000000001", system_title=bytes(8)))
    await store.keys.set("RESET00000000001", 1, bytes(16))
    await store.counters.reserve("RESET00000000001", 1, 64)
    await store.counters.accept_theirs("RESET00000000001", 1, 900)
    await store.close()

    reset = admin(backend, "reset-counters", "RESET00000000001")
    assert reset.returncode == 0, reset.stderr
    assert "the invocation counters of 1 clients reset" in reset.stdout
    unknown = admin(backend, "reset-counters", "NOSUCHMETER")
    assert unknown.returncode == 1 and "NOSUCHMETER" in unknown.stderr
    assert "Traceback" not in unknown.stderr

    store = backend.make()
    await store.open()
    assert await store.counters.last("RESET00000000001", 1) == (0, None)
    [line, *_] = await store.audit.log()
    assert (line.action, line.target) == ("reset counters", "RESET00000000001")
    assert line.actor.startswith("sac-admin (")
    await store.close()
