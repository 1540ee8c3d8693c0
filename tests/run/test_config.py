"""The configuration: file, environment, secrets, and every problem reported at once."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from sac.config import SETTINGS, ConfigProblems, load_config

ROOT = Path(__file__).resolve().parents[2]
KEY = "ab" * 32
ENV = {"SAC_MASTER_KEY": KEY}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sac.ini"
    path.write_text(text)
    return path


def problems(path: Path | None, env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigProblems) as caught:
        load_config(path, env)
    assert str(caught.value).startswith(f"the configuration has {len(caught.value.problems)}")
    return caught.value.problems


def test_defaults_without_a_file() -> None:
    config = load_config(None, ENV)
    assert config.push.listen == ("tcp:4059:backlog=1024",)
    assert config.web.listen == ("tcp:8080:interface=127.0.0.1",)
    assert config.web.secure_cookies is True
    assert config.web.session_hours == 8 and config.web.session_max_hours == 12
    assert config.web.password_checks == 4
    assert config.sac.system_title == b"SACSACSA"
    assert config.poll.interval == 86_400
    assert config.source("push", "listen") == "default"
    assert config.master_key is not None and config.master_key.secret == bytes.fromhex(KEY)
    assert config.file is None


def test_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[web]\nlisten = tcp:9000\nname = From the file\n[poll]\nenabled = no\n")
    config = load_config(path, {**ENV, "SAC_WEB_LISTEN": "tcp:9001 tcp:9002"})
    assert config.web.listen == ("tcp:9001", "tcp:9002")
    assert config.source("web", "listen") == "environment SAC_WEB_LISTEN"
    assert config.web.name == "From the file"
    assert config.source("web", "name") == f"file {path}"
    assert config.poll.enabled is False


def test_sac_config_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[web]\nname = Named\n")
    assert load_config(None, {**ENV, "SAC_CONFIG": str(path)}).web.name == "Named"


def test_every_problem_is_reported_together(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[push]\nmax_pdu = lots\nlisten = tcp:notaport\nudp = udp:99999\n"
        "[web]\nlisen = tcp:8080\nsecure_cookies = perhaps\n"
        "[poll]\nconcurrency = 0\n"
        "[wbe]\nname = x\n"
        "[log]\nformat = xml\n",
    )
    found = problems(path, {"SAC_SAC_SYSTEM_TITLE": "abcd"})
    text = "\n".join(found)
    assert len(found) == 10, text
    for expected in (
        "[push] max_pdu (file",
        "'lots' is not a whole number",
        "[push] listen (file",
        "[push] udp (file",
        "unknown setting [web] lisen (did you mean listen?)",
        "[web] secure_cookies",
        "'perhaps' is not yes or no",
        "[poll] concurrency",
        "0 is not between 1 and 10,000",
        "unknown section [wbe] (did you mean web?)",
        "[log] format",
        "[sac] system_title (environment SAC_SAC_SYSTEM_TITLE)",
        "no master key",
    ):
        assert expected in text, f"{expected!r} not in:\n{text}"


def test_secrets_are_refused_in_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"[store]\nmaster_key = {KEY}\npassword = hunter2\n"
        "address = postgresql://sac:hunter2@db.example/sac\n",
    )
    found = problems(path, ENV)
    assert len(found) == 3, found
    assert all("hunter2" not in p and KEY not in p for p in found)
    assert "[store] master_key: a secret does not belong in the configuration file" in found[0]
    assert "$SAC_STORE_PASSWORD or [store] password_file" in found[2]
    dsn = "host=db.example dbname=sac user=sac password=hunter2"
    assert "holds a password" in problems(write(tmp_path, f"[store]\naddress = {dsn}\n"), ENV)[0]


def test_secrets_from_files_and_the_environment(tmp_path: Path) -> None:
    key_file = tmp_path / "master.key"
    key_file.write_text(KEY + "\n")
    password_file = tmp_path / "db.password"
    password_file.write_text("s3cret\n")
    path = write(
        tmp_path,
        "[store]\naddress = postgresql://sac@db.example/sac\n"
        f"master_key_file = {key_file}\npassword_file = {password_file}\n",
    )
    config = load_config(path, {})
    assert config.master_key is not None and config.master_key.secret.hex() == KEY
    assert "password=s3cret" in config.store_dsn
    shown = "\n".join(" ".join(row) for row in config.shown())
    assert "s3cret" not in shown and KEY not in shown and "master key set" in shown
    assert "s3cret" not in repr(config) and KEY not in repr(config)
    # the environment's password; a DSN with one is fine from the environment
    env = {**ENV, "SAC_STORE_PASSWORD": "envpw", "SAC_STORE_ADDRESS": "host=h dbname=d"}
    assert "password=envpw" in load_config(None, env).store_dsn
    assert problems(None, {"SAC_MASTER_KEY": "12"})[0].startswith("master key (environment")
    key_file.write_text("")
    assert any("is empty" in p for p in problems(path, {}))


def test_a_tls_listener_whose_certificate_is_missing(tmp_path: Path) -> None:
    env = {**ENV, "SAC_WEB_LISTEN": f"ssl:8443:privateKey={tmp_path}/no.key:certKey=x.crt"}
    (found,) = problems(None, env)
    assert found.startswith("[web] listen (environment SAC_WEB_LISTEN)")


def test_the_example_documents_every_setting_with_its_default() -> None:
    """sac.ini.example loads cleanly and has each setting once, at its default, commented."""
    example = ROOT / "sac.ini.example"
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(example)
    written = {(s, n): v for s in parser.sections() for n, v in parser.items(s)}
    assert set(written) == {(s.section, s.name) for s in SETTINGS}
    for s in SETTINGS:
        assert written[(s.section, s.name)] == s.default, s
    lines = example.read_text().splitlines()
    for i, line in enumerate(lines):
        if "=" in line and not line.startswith("#"):
            assert lines[i - 1].startswith("#"), f"line {i + 1} has no comment above it: {line}"
    config = load_config(example, ENV)
    assert config.source("web", "listen") == f"file {example}"
