"""The operators' pages in a real browser: Debian's Chromium driven by Playwright, against a
whole SAC in its own process with simulated meters calling in.

Screenshots of the list and detail pages are saved in build/screenshots/.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "build" / "screenshots"
PASSWORD = "a long operator password"
PAGES = ("document", "xhr")  # a page (or the upload's answer, a page) may answer 4xx
# a real site process and Chromium; the tests share them (module fixtures), in order, on one
# pytest-xdist worker
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("browser")]


@pytest.fixture(scope="module")
def sac(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("browser-sac")
    ready = folder / "ready.json"
    env = {**os.environ, "SAC_MASTER_KEY": "22" * 32, "SAC_TEST_PASSWORD": PASSWORD}
    log = (folder / "sac.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.browser.site_process", str(folder / "sac.db"), str(ready)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(f"the SAC did not start:\n{(folder / 'sac.log').read_text()[-3000:]}")
            time.sleep(0.1)
        info = json.loads(ready.read_text())
        info["base"] = f"http://127.0.0.1:{info['web']}"
        info["log"] = folder / "sac.log"
        yield info
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture
def page(chromium: Any, sac: dict[str, Any]) -> Iterator[Any]:
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    # a script error, a resource the page's policy refused, a style, script, icon or fetch
    # that failed (a form answered 400 with its errors is a page, not a failure)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on(
        "console",
        lambda m: errors.append(m.text) if "Refused" in m.text or "Policy" in m.text else None,
    )
    page.on(
        "response",
        lambda r: (
            errors.append(f"{r.status} {r.url}")
            if r.status >= 500 or (r.status >= 400 and r.request.resource_type not in PAGES)
            else None
        ),
    )
    page.goto(sac["base"] + "/meters")
    page.fill("input[name=username]", "otto")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/meters$"))
    yield page
    context.close()
    assert errors == [], errors  # no script error, no refused resource (CSP) on any page


def test_sign_in_and_the_meter_list(page: Any, sac: dict[str, Any]) -> None:
    assert page.locator("header").inner_text().count("otto") == 1
    rows = page.locator("#meters tbody tr")
    assert rows.count() == 3
    # the simulated meters call in every 2 s: their values appear in the list
    deadline = time.monotonic() + 20
    while "Sm³" not in page.locator("#meters").inner_text() and time.monotonic() < deadline:
        time.sleep(0.5)
        page.reload()
    assert "Sm³" in page.locator("#meters").inner_text()
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "meter-list.png"), full_page=True)
    page.click("th a:has-text('LDN')")  # sort by LDN, descending now
    first = page.locator("#meters tbody tr td a").first.inner_text()
    assert first == sorted(sac["meters"])[-1]


def test_add_a_meter_with_a_bad_field_then_right(page: Any) -> None:
    page.click("nav >> text=Add a meter")
    page.fill("#f-ldn", "TOO-SHORT")
    page.fill("#f-system_title", "2F19000000ABCDEF")
    page.fill("#f-ek", "00112233445566778899AABBCCDDEEFF")
    page.click("button:has-text('Add the meter')")
    assert "An LDN is 16 characters" in page.locator("#e-ldn").inner_text()
    assert page.locator("#f-ek").input_value() == ""  # a key is never sent back
    page.fill("#f-ldn", "BRW0000000000001")
    page.fill("#f-ek", "00112233445566778899AABBCCDDEEFF")
    page.click("button:has-text('Add the meter')")
    page.wait_for_url(re.compile(r".*/meters/BRW0000000000001\?added=1"))
    assert "added with its keys" in page.content()


def test_import_a_csv_with_one_bad_line(page: Any, sac: dict[str, Any], tmp_path: Path) -> None:
    ldns = sac["meters"]
    good = "00112233445566778899AABBCCDDEEFF"
    bad = tmp_path / "keys.csv"
    bad.write_text(
        f"ldn,client,ek,ak\n{ldns[0]},1,{good},\n{ldns[1]},1,NOT-A-KEY,\n{ldns[2]},1,{good},\n"
    )
    page.click("nav >> text=Import keys")
    page.set_input_files("input[type=file]", str(bad))
    page.click("button:has-text('Check the file')")
    page.wait_for_selector("#bad-lines")
    text = page.locator("#bad-lines").inner_text()
    assert re.search(r"^3\s", text.splitlines()[1]), text  # line 3 of the file, reported
    assert "1 of 3 lines cannot be imported" in page.content()


def test_the_detail_page_draws_its_chart(page: Any, sac: dict[str, Any]) -> None:
    first = sac["meters"][0]
    page.goto(f"{sac['base']}/meters/{first}?range=90d")
    chart = page.locator("#index-chart svg.chart")
    chart.wait_for()
    box = chart.bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 80
    assert page.locator("#index-chart polyline").count() == 1
    assert page.locator("#daily-chart rect.bar").count() >= 30
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "meter-detail.png"), full_page=True)


def test_close_the_valve_and_watch_it_done(page: Any, sac: dict[str, Any]) -> None:
    target = sac["meters"][1]
    page.goto(f"{sac['base']}/meters/{target}")
    page.click("text=Close the valve…")
    assert target in page.locator("main").inner_text()  # the confirmation names the meter
    page.click(f"button:has-text('Close the valve of {target}')")
    page.wait_for_url(re.compile(rf".*/meters/{target}\?queued=\d+#commands"))
    row = page.locator("tr.highlight")
    assert row.locator("[data-state]").inner_text() in ("pending", "sent")
    # the meter calls in within 2 s, runs the command, the valve is read back closed; the page
    # follows the command without a reload
    row.locator("[data-state]:has-text('done')").wait_for(timeout=30_000)
    page.locator("#valve-state:has-text('closed')").wait_for(timeout=5_000)
    page.screenshot(path=str(SHOTS / "meter-valve-closed.png"), full_page=True)


def test_the_whole_meter_battery_events_and_histories(page: Any, sac: dict[str, Any]) -> None:
    """After their first push sessions the meters have their battery (the read plan read
    it: compact frames 47/48 carry none); a valve closed is an event in words, read in the
    session that closed it (the logbook its counter moved); the detail page shows each
    object's history and the consumption per gas day, the missing ones as gaps."""
    page.goto(f"{sac['base']}/meters")
    batteries = [  # the simulated meters' (a meter added by hand above never called in)
        page.locator(f"table.list tbody tr:has(a:text-is('{ldn}')) td.num").nth(1).inner_text()
        for ldn in sac["meters"]
    ]
    assert all(b.endswith("days") for b in batteries), batteries
    target = sac["meters"][2]  # a meter of its own (xdist may run these tests apart)
    page.goto(f"{sac['base']}/meters/{target}")
    page.click("text=Close the valve…")
    page.click(f"button:has-text('Close the valve of {target}')")
    row = page.locator("tr.highlight")
    row.locator("[data-state]:has-text('done')").wait_for(timeout=30_000)
    for _ in range(20):  # the same session stores what its plan read, after the command
        if "valve closed by command" in page.locator("#events").inner_text():
            break
        time.sleep(0.5)
        page.reload()
    events = page.locator("#events")
    assert "valve closed by command" in events.inner_text()
    assert "metrological logbook" in events.inner_text()
    assert "closed" in page.locator("#changes-valve").inner_text()
    first = sac["meters"][0]
    page.goto(f"{sac['base']}/meters/{first}?range=90d")
    days = page.locator("#gas-days tbody tr")
    assert days.count() >= 30
    # the battery the read plan read, drawn (a dot for each reading)
    assert page.locator("#chart-battery_autonomy svg.chart").count() == 1
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "meter-whole.png"), full_page=True)


def test_an_admin_adds_a_user_who_then_signs_in(chromium: Any, sac: dict[str, Any]) -> None:
    admin = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = admin.new_page()
    page.goto(sac["base"] + "/admin/users")  # sign-in first, then back here
    page.fill("input[name=username]", "ada")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/admin/users$"))
    page.fill("#f-name", "vera")
    page.select_option("#f-role", "viewer")
    page.fill("#f-password", "vera's long password")
    page.fill("#f-password2", "vera's long password")
    page.click("button:has-text('Add the user')")
    page.wait_for_url(re.compile(r".*/admin/users\?done=added&user=vera$"))
    assert "vera was added." in page.locator("[role=status]").inner_text()
    row = page.locator("#users tr[data-user=vera]")
    assert row.locator("select[name=role]").input_value() == "viewer"
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "admin-users.png"), full_page=True)
    admin.close()
    vera = chromium.new_context()
    page = vera.new_page()
    page.goto(sac["base"] + "/meters")
    page.fill("input[name=username]", "vera")
    page.fill("input[name=password]", "vera's long password")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/meters$"))
    assert "vera (viewer)" in page.locator("header").inner_text()
    assert page.locator("nav >> text=Users").count() == 0
    vera.close()


@pytest.mark.parametrize(
    "target", ["/\t/evil.example/", "/\n/evil.example/", "/\\evil.example/", "/%09/evil.example/"]
)
def test_after_sign_in_chromium_stays_on_this_site(
    chromium: Any, sac: dict[str, Any], target: str
) -> None:
    """A hostile ``next`` that Chromium would read as another host (it drops tabs and
    newlines, takes a backslash for a slash) lands on the meter list of this site."""
    context = chromium.new_context()
    page = context.new_page()
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.goto(sac["base"] + "/login?" + urlencode({"next": target}))
    page.fill("input[name=username]", "otto")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()
    assert page.url == sac["base"] + "/meters", page.url
    assert not [url for url in requested if "evil.example" in url.split("?")[0]], requested
    context.close()


def test_acknowledge_an_alarm(page: Any, sac: dict[str, Any], tmp_path: Path) -> None:
    """The tamper alarm site_process stored: found on the alarms page, acknowledged with a
    note, gone from the open alarms, and its meter page says who, when and what."""
    target = sac["meters"][-1]
    page.click("nav >> text=Alarms")
    page.wait_for_url(re.compile(r".*/alarms$"))
    row = page.locator(f"#alarms tbody tr:has(a:has-text('{target}'))", has_text="tampering")
    assert row.count() == 1
    assert row.locator(".severity.alarm").inner_text() == "alarm"
    assert "tamper" in page.locator("#categories").inner_text()
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "alarms.png"), full_page=True)
    row.locator("input[name=note]").fill("seal checked on site")
    row.locator("button:has-text('Acknowledge')").click()
    page.wait_for_url(re.compile(r".*/alarms\?acknowledged=1$"))
    assert "1 alarm acknowledged." in page.locator("[role=status]").inner_text()
    assert page.locator(f"#alarms tbody tr:has(a:has-text('{target}'))").count() == 0
    page.screenshot(path=str(tmp_path / "alarms-acknowledged.png"), full_page=True)
    page.goto(f"{sac['base']}/meters/{target}#events")
    events = page.locator("#events").inner_text()
    assert "acknowledged by otto at" in events and "seal checked on site" in events
    page.screenshot(path=str(tmp_path / "meter-alarm-acknowledged.png"), full_page=True)
    page.screenshot(path=str(SHOTS / "meter-alarm-acknowledged.png"), full_page=True)
    assert (tmp_path / "alarms-acknowledged.png").stat().st_size > 10_000


def test_a_job_from_the_list_followed_live_to_all_done(page: Any, sac: dict[str, Any]) -> None:
    """The list's filter (the simulated fleet's LDN prefix) carried by "Apply to these
    meters" to the job form; the job page then follows the meters' sessions without a
    reload until every command is done and the job finished."""
    prefix = os.path.commonprefix(sac["meters"])  # noqa: RUF071 -- LDNs, not paths
    page.goto(f"{sac['base']}/meters?q={prefix}")
    page.click("#apply")
    page.wait_for_url(re.compile(r".*/jobs/new\?q=.*"))
    assert "<strong>3</strong>" in page.content()
    page.check("input[name=kind][value=sync-clock]")
    page.click("button:has-text('Start the job')")
    page.wait_for_url(re.compile(r".*/jobs/\d+$"))
    page.evaluate("window.sameDocument = true")  # gone if the page reloads
    page.locator("[data-job-state]:has-text('finished')").wait_for(timeout=30_000)
    assert page.locator('[data-count="done"]').inner_text() == "3"
    assert page.locator("[data-job-progress]").get_attribute("value") is not None
    assert page.locator("[data-job-cancel]").count() == 0  # gone once finished
    assert page.evaluate("window.sameDocument === true")  # updated live, not reloaded
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "job-finished.png"), full_page=True)


def test_edit_a_meters_pdr_and_watch_it_confirmed(page: Any, sac: dict[str, Any]) -> None:
    """The settings page of a simulated meter: a PDR refused next to its field, then a right
    one confirmed (before and after shown), queued, run when the meter next pushes (every
    2 s), read back in the same session: the page follows it to done without a reload and
    shows the value read back."""
    target = sac["meters"][0]
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.goto(f"{sac['base']}/meters/{target}")
    page.click("#settings-link")
    page.wait_for_url(re.compile(rf".*/meters/{target}/settings$"))
    row = page.locator("#s-pdr")
    before = row.locator("[data-last]").inner_text()
    row.locator("input[name=value]").fill("12AB")
    row.locator("button:has-text('Change…')").click()
    assert "14 digits, not '12AB'" in page.locator("#e-pdr").inner_text()
    assert page.locator("#f-pdr").input_value() == "12AB"  # the typed text kept
    page.screenshot(path=str(SHOTS / "settings-refused.png"), full_page=True)
    new = "98765432109876"
    page.locator("#f-pdr").fill(f" {new} ")
    page.locator("#s-pdr button:has-text('Change…')").click()
    assert page.locator("#after").inner_text() == new  # normalised
    assert page.locator("#before").inner_text().startswith(before.split()[0])
    page.screenshot(path=str(SHOTS / "settings-confirm.png"), full_page=True)
    page.click(f"button:has-text('Change PDR (point of redelivery) of {target}')")
    page.wait_for_url(re.compile(rf".*/meters/{target}/settings\?queued=\d+#s-pdr"))
    row = page.locator("#s-pdr")
    assert row.locator("[data-state]").inner_text() in ("pending", "sent")
    row.locator("[data-state]:has-text('done')").wait_for(timeout=30_000)
    result = row.locator("[data-result]").inner_text()
    assert f"set to {new}, confirmed by reading it back" in result, result
    row.locator(f"[data-last]:has-text('{new}')").wait_for(timeout=10_000)  # the read back
    page.screenshot(path=str(SHOTS / "settings-done.png"), full_page=True)
    page.set_viewport_size({"width": 400, "height": 900})  # a phone: one setting under another
    assert page.locator("#settings thead").is_hidden()
    box = row.bounding_box()
    assert box is not None and box["width"] <= 400
    page.screenshot(path=str(SHOTS / "settings-small.png"), full_page=True)
