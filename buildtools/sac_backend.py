"""The build backend (``pyproject.toml``): setuptools' own, with one addition to the editable
wheel, so that ``twistd`` finds the ``sac`` command after a plain ``pip install -e .``.

Twisted finds its plugins in the ``twisted/plugins`` directory of each ``sys.path`` entry;
``twisted/plugins/sac_dropin.py`` is at the top of the source tree.  setuptools' default
editable install (PEP 660, "lenient" mode) imports ``sac`` through an import hook that never
puts the source tree on ``sys.path``, so ``twistd`` answered "Unknown command: sac"; its
``compat`` mode, which put the tree there, is deprecated and to be removed.  The editable wheel
built here also carries ``sac-source-tree.pth``: a static path entry for the source tree
(what ``compat`` gave), which ``site`` reads at each start.  A regular wheel is setuptools'
own, unchanged: it installs the drop-in into ``site-packages/twisted/plugins``.

setuptools' note that every editable install prints ("Please be careful with folders in your
working directory with the same name as your package") is left out: it is information, not a
warning, and with the source tree on ``sys.path`` those folders are the package.
"""

from __future__ import annotations

import base64
import hashlib
import warnings
import zipfile
from pathlib import Path
from typing import Any

from setuptools import build_meta
from setuptools.build_meta import *  # noqa: F403 (every other hook, as setuptools has it)

try:
    from setuptools.warnings import InformationOnly
except ImportError:  # setuptools < 67 (a venv's bundled one) has neither the module nor the note
    InformationOnly = UserWarning  # type: ignore[misc,assignment]

ROOT = Path(__file__).resolve().parents[1]
PATH_ENTRY = "sac-source-tree.pth"


def build_editable(
    wheel_directory: str,
    config_settings: dict[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Editable installation", InformationOnly)
        name = build_meta.build_editable(wheel_directory, config_settings, metadata_directory)
    _add_file(Path(wheel_directory, name), PATH_ENTRY, f"{ROOT}\n".encode())
    return name


def _add_file(wheel: Path, name: str, data: bytes) -> None:
    """``wheel`` with ``name`` added at its top, listed in its RECORD (PEP 427: path,
    urlsafe-base64 SHA-256 without padding, size)."""
    with zipfile.ZipFile(wheel) as old:
        entries = [(info, old.read(info)) for info in old.infolist()]
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    line = f"{name},sha256={digest},{len(data)}\n".encode()
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as new:
        new.writestr(name, data)
        for info, content in entries:
            if info.filename.endswith(".dist-info/RECORD"):
                content = line + content
            new.writestr(info, content)
