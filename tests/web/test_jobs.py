"""Jobs on the pages and the JSON API: from the meter list's filter to a job's page and its
live JSON, a CSV of LDNs (unknown ones listed, or skipped), bad input named with nothing
queued, cancel with CSRF, roles."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest_twisted

from sac.store import Actor, CommandState, NewMeter
from tests.web.conftest import Backend, Site, make_site

METERS = 40


def ldn(i: int) -> str:
    return f"WEB{i:013d}"


async def fleet_site(backend: Backend) -> Site:
    site = await make_site(backend)
    meters = [(NewMeter(ldn(i), pdr=f"{i:014d}"), {}) for i in range(METERS)]
    await site.store.meters.add_many(meters, Actor("setup"))
    return site


def commands(backend: Backend, where: str = "1 = 1") -> int:
    return int(backend.raw(f"SELECT count(*) FROM commands WHERE {where}")[0][0])


def multipart(fields: dict[str, str], file: bytes | None) -> tuple[bytes, dict[str, str]]:
    boundary = "----sacjobtest"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ]
    if file is not None:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="l.csv"\r\n'
            f"Content-Type: text/csv\r\n\r\n".encode()
            + file
            + b"\r\n"
        )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


async def post_job(browser: Any, fields: dict[str, str], file: bytes | None = None) -> Any:
    body, headers = multipart({"csrf": browser.csrf, **fields}, file)
    return await browser.request("POST", "/jobs", data=body, headers=headers)


@pytest_twisted.ensureDeferred
async def test_a_job_from_the_list_filter_to_its_page(backend: Backend) -> None:
    site = await fleet_site(backend)
    otto = await site.signed_in("otto")
    code, _, text = await otto.get("/meters?q=WEB000000000001")
    link = re.search(r'id="apply" href="([^"]+)"', text)
    assert code == 200 and link is not None and "10 meters" in text
    code, _, form = await otto.get(link.group(1).replace("&amp;", "&"))
    assert code == 200 and "<strong>10</strong>" in form and "starting WEB000000000001" in form
    fields = {"q": "WEB000000000001", "source": "filter", "kind": "valve-close", "days": "3"}
    code, heads, _ = await post_job(otto, fields)
    assert code == 303, heads
    job_path = heads["location"]
    await site.web.jobs.wait(int(job_path.rsplit("/", 1)[1]))
    assert commands(backend, "kind = 'valve-close' AND state = 'pending'") == 10
    code, _, page = await otto.get(job_path)
    assert code == 200 and "Cancel the job" in page and 'data-count="pending">10<' in page
    code, heads, body = await otto.get(job_path + ".json")
    answer = json.loads(body)
    assert heads["content-type"] == "application/json"
    assert answer["counts"]["pending"] == 10 and answer["planned"] == 10
    assert answer["filter"] == {"search": "WEB000000000001"}
    code, _, listing = await otto.get("/jobs")
    assert code == 200 and job_path in listing
    # a stale form is refused; the right one cancels
    code, _, _ = await otto.post(job_path + "/cancel", {"csrf": "stale"})
    assert code == 403 and commands(backend, "state = 'cancelled'") == 0
    code, heads, _ = await otto.post(job_path + "/cancel")
    assert code == 303 and commands(backend, "state = 'cancelled'") == 10
    code, _, page = await otto.get(job_path)
    assert "Cancel the job" not in page and "cancelled" in page


@pytest_twisted.ensureDeferred
async def test_bad_input_is_named_on_the_form_and_nothing_is_queued(backend: Backend) -> None:
    site = await fleet_site(backend)
    otto = await site.signed_in("otto")
    cases = [
        ({"kind": "other", "other": "set-pdr", "params": '{"pdr": "12"}'}, "pdr: a PDR is"),
        ({"kind": "other", "other": "set-pdr", "params": "{nope"}, "params: is not JSON"),
        ({"kind": "sync-clock", "days": "400"}, "expires: give 1 to 90 days"),
        ({"kind": "sync-clock", "q": "ZZZ"}, "filter: keeps no meter"),
        ({"kind": "sync-clock", "source": "csv"}, "file: choose a CSV file"),
    ]
    for fields, said in cases:
        code, _, text = await post_job(otto, {"source": "filter", "days": "7", **fields})
        assert code == 422 and said in text, (fields, text[-2000:])
    csv = (
        b"ldn;note\n"
        + b"\n".join(f"{ldn(i)};x".encode() for i in range(5))
        + b"\nNOPE000000000001;y\nNOPE000000000002;z\n"
    )
    code, _, text = await post_job(otto, {"source": "csv", "kind": "sync-clock", "days": "7"}, csv)
    assert code == 422 and "2 LDNs are no meter" in text and "NOPE000000000002" in text
    assert commands(backend) == 0
    fields = {"source": "csv", "kind": "sync-clock", "days": "7", "skip_unknown": "1"}
    code, heads, _ = await post_job(otto, fields, csv)
    assert code == 303
    await site.web.jobs.wait(int(heads["location"].rsplit("/", 1)[1]))
    assert commands(backend) == 5
    vera = await site.signed_in("vera")
    code, _, _ = await post_job(vera, {"source": "filter", "kind": "sync-clock", "days": "7"})
    assert code == 403 and commands(backend) == 5


@pytest_twisted.ensureDeferred
async def test_the_api_starts_follows_lists_and_cancels_jobs(backend: Backend) -> None:
    site = await fleet_site(backend)
    token, _ = await site.store.tokens.create("otto", "jobs")
    viewer, _ = await site.store.tokens.create("vera", "read")
    api = site.browser()

    async def call(method: str, path: str, body: Any = None, who: str = token) -> Any:
        headers = {"Authorization": f"Bearer {who}", "Content-Type": "application/json"}
        data = json.dumps(body).encode() if body is not None else None
        code, _, text = await api.request(method, "/api/v1" + path, headers=headers, data=data)
        return code, json.loads(text) if text else None

    code, job = await call("POST", "/jobs", {"kind": "sync-clock", "filter": {"valve": None}})
    assert code == 201 and job["planned"] == METERS and job["queuing"] is True
    await site.web.jobs.wait(job["id"])
    code, job = await call("GET", f"/jobs/{job['id']}")
    assert code == 200 and job["counts"]["pending"] == METERS and job["queuing"] is False
    ldns = [ldn(1), "NOPE000000000009", ldn(2)]
    code, refused = await call("POST", "/jobs", {"kind": "sync-clock", "ldns": ldns})
    assert code == 422 and refused["error"]["code"] == "unknown_meters"
    assert refused["error"]["items"] == [
        {"index": 1, "field": "ldns", "message": "no meter NOPE000000000009"}
    ]
    body = {"kind": "set-pdr", "params": {"pdr": "1"}, "ldns": ldns, "skip_unknown": True}
    code, refused = await call("POST", "/jobs", body)
    assert code == 422 and refused["error"]["items"][0]["field"] == "pdr"
    code, refused = await call("POST", "/jobs", {"kind": "sync-clock", "filter": {"valve": 7}})
    assert code == 422 and refused["error"]["items"][0]["field"] == "filter.valve"
    code, refused = await call("POST", "/jobs", {"kind": "sync-clock"})
    assert code == 422 and refused["error"]["items"][0]["field"] == "filter"
    code, refused = await call("POST", "/jobs", {"kind": "sync-clock", "ldns": ldns}, viewer)
    assert code == 403
    assert commands(backend) == METERS
    code, listing = await call("GET", "/jobs", who=viewer)
    assert code == 200 and [j["id"] for j in listing["jobs"]] == [job["id"]]
    code, cancelled = await call("POST", f"/jobs/{job['id']}/cancel")
    assert code == 200 and cancelled["state"] == "cancelled"
    assert cancelled["counts"]["cancelled"] == METERS
    code, answer = await call("POST", f"/jobs/{job['id']}/cancel")
    assert code == 409 and answer["error"]["code"] == "conflict"
    code, answer = await call("GET", "/jobs/99999")
    assert code == 404 and answer["error"]["code"] == "not_found"
    assert (await site.store.commands.recent(limit=1))[0].state is CommandState.CANCELLED
