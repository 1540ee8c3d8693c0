"""Quiet unless something is wrong (issue 19): importing the service's modules, as twistd
and the demo do, raises no deprecation warning (Twisted's static-file module and spyne's
``import cgi`` used to print theirs in every run and in the suite's summary)."""

from __future__ import annotations

import subprocess
import sys


def test_the_service_imports_without_a_deprecation_warning() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-W",
            "error::DeprecationWarning",
            "-W",
            "error::PendingDeprecationWarning",
            "-c",
            "import sac.tap, sac.web.app, sac.web.soap, sac.demo, sac.admin",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
