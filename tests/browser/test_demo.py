"""`make demo` as a newcomer meets it: `python -m sac.demo` prints a URL and a password; in
Chromium, the list shows the simulated meters with their values, a meter's page has its
history, a valve close runs when the meter calls; Ctrl-C stops everything."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "build" / "screenshots"

pytestmark = pytest.mark.slow  # `make demo`'s process and Chromium


def test_the_demo_from_its_printed_url_to_ctrl_c(chromium: Any, tmp_path: Path) -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "sac.demo", "--meters", "60", "--speed", "600", "--port", "0"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as a shell's background job or a CI runner starts it: SIGINT ignored (Ctrl-C must
        # stop it all the same; it once did not, and this test hung in such runs)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(demo.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while not any("password" in line for line in out):
            if demo.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"no URL printed:\n{''.join(out)}\n{demo.stderr.read()}")
            time.sleep(0.1)
        text = "".join(out)
        url = re.search(r"open\s+(http://127\.0\.0\.1:\d+/)", text).group(1)
        password = re.search(r"password\s+(\S+)", text).group(1)
        browse(chromium, url, password)
        web_port = int(url.rsplit(":", 1)[1].strip("/"))
        # the sac-admin command it prints works on its store, while it runs
        command = re.search(r"\.venv/bin/sac-admin (--config \S+ .*)", text).group(1).split()
        made = subprocess.run(
            [str(Path(sys.executable).parent / "sac-admin"), *command],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("SAC_")},
            timeout=60,
            check=False,
        )
        assert made.returncode == 0 and made.stdout.startswith("sac_"), made.stderr
    finally:
        demo.send_signal(signal.SIGINT)  # Ctrl-C
        code = demo.wait(30)
        reader.join(5)
    errors = demo.stderr.read()
    assert code == 0, errors
    assert "SAC demo stopped." in "".join(out)
    assert "Traceback" not in errors, errors
    assert "#warn]" not in errors and "#error]" not in errors, errors  # quiet when all is well
    assert (tmp_path / ".demo" / "master.key").stat().st_mode & 0o777 == 0o600
    log = (tmp_path / ".demo" / "sac.log").read_text()
    assert "SAC stopped cleanly" in log and "Traceback" not in log
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", web_port)):
        pass


def browse(chromium: Any, url: str, password: str) -> None:
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/meters$"))
    # the meters call in every 1.5 s (15 simulated minutes at 600x): values appear
    deadline = time.monotonic() + 30
    while page.locator("#meters").inner_text().count("Sm³") < 20 and time.monotonic() < deadline:
        time.sleep(0.5)
        page.reload()
    listed = page.locator("#meters").inner_text()
    assert listed.count("Sm³") >= 20, listed
    assert page.locator("h1").inner_text().split() == ["Meters", "60"]
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "demo-meter-list.png"), full_page=True)
    first = page.locator("#meters tbody tr td a").first.inner_text()
    page.goto(f"{url}meters/{first}?range=90d")
    page.locator("#index-chart polyline").wait_for()
    assert page.locator("#daily-chart rect.bar").count() >= 60  # 90 days of history
    page.click("text=Close the valve…")
    page.click(f"button:has-text('Close the valve of {first}')")
    page.wait_for_url(re.compile(rf".*/meters/{first}\?queued=\d+#commands"))
    page.locator("tr.highlight [data-state]:has-text('done')").wait_for(timeout=30_000)
    page.locator("#valve-state:has-text('closed')").wait_for(timeout=10_000)
    page.screenshot(path=str(SHOTS / "demo-valve-closed.png"), full_page=True)
    context.close()
    assert errors == [], errors
