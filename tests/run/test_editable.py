"""What a contributor types, ``pip install -e .`` and nothing more, gives a ``twistd`` that
knows the ``sac`` command: the editable wheel puts the source tree on ``sys.path``
(``buildtools/sac_backend.py``), where Twisted looks for ``twisted/plugins/sac_dropin.py``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# pip builds in the source tree (build/, *.egg-info): one such test at a time
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("source-tree")]

ROOT = Path(__file__).resolve().parents[2]


def test_a_plain_editable_install_gives_twistd_the_sac_command(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    bin_dir = venv / "bin"
    # pip's own settings and cache as the caller has them; the venv alone on the path
    drop = ("PYTHONPATH", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PATH"] = f"{bin_dir}:/usr/bin:/bin"
    install = subprocess.run(
        [bin_dir / "pip", "install", "-q", "--disable-pip-version-check", "-e", ROOT],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert install.returncode == 0, install.stderr
    # quiet: setuptools' "Editable installation ... be careful with folders" note is left out
    assert "Editable installation" not in install.stderr + install.stdout, install.stderr
    listed = subprocess.run(
        [bin_dir / "twistd", "--help"], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert listed.returncode == 0, listed.stderr
    listing = listed.stdout.partition("\nCommands:\n")[2].splitlines()
    commands = [line.split()[0] for line in listing if line.startswith("    ")]
    assert "sac" in commands, listed.stdout
    probe = "import sac, twisted.plugins.sac_dropin as d; print(sac.__file__); print(d.__file__)"
    files = subprocess.run(
        [bin_dir / "python", "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env=env,
    ).stdout.split()
    # editable: the source tree's own files, not copies
    assert files == [str(ROOT / "sac" / "__init__.py"), str(ROOT / "twisted/plugins/sac_dropin.py")]
    check = subprocess.run(
        [bin_dir / "twistd", "sac", "--help"], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert check.returncode == 0 and "--config" in check.stdout, check.stdout + check.stderr
