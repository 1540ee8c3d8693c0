"""The examples of docs/commands.md, run: each request sent to a SAC on both stores (the JSON
API with a bearer token, SOAP with HTTP Basic) and its answer compared with the one the
document shows, ids and times aside."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest_twisted
from lxml import etree

from sac.store import Actor, NewMeter
from tests.web.conftest import PASSWORD, Backend, make_site

DOC = Path(__file__).resolve().parents[2] / "docs" / "commands.md"
EXAMPLE = re.compile(r"<!-- example: ([\w-]+) -->\n```\w+\n(.*?)```", re.S)
VOLATILE = {"id", "created", "at"}  # values that differ from run to run
LDN = "SIM0000000000001"


def examples() -> dict[str, str]:
    return dict(EXAMPLE.findall(DOC.read_text()))


def http(text: str) -> tuple[str, dict[str, str], str]:
    """(first line, headers, body) of an HTTP example."""
    head, _, body = text.partition("\n\n")
    first, *lines = head.splitlines()
    headers = dict(line.split(": ", 1) for line in lines)
    return first, headers, body


def steady(value: Any) -> Any:
    """A JSON answer without its volatile values (and the token's id, in names)."""
    if isinstance(value, dict):
        return {k: "*" if k in VOLATILE else steady(v) for k, v in value.items()}
    if isinstance(value, list):
        return [steady(v) for v in value]
    if isinstance(value, str):
        return re.sub(r"API token #\d+", "API token #*", value)
    return value


def xml_items(text: str) -> list[tuple[str, str]]:
    """(tag, text) of each element of a SOAP message, volatile values aside."""
    root = etree.fromstring(text.strip().encode())
    out = []
    for element in root.iter():
        tag = etree.QName(element).localname
        value = (element.text or "").strip()
        out.append((tag, "*" if tag in VOLATILE else value))
    return out


@pytest_twisted.ensureDeferred
async def test_the_examples_of_the_commands_document_run(backend: Backend) -> None:
    found = examples()
    assert set(found) == {
        "api-queue",
        "api-queue-answer",
        "api-refused",
        "api-refused-answer",
        "soap-request",
        "soap-answer",
    }
    site = await make_site(backend)
    await site.store.meters.add(NewMeter(LDN, profile="uni-ts-11291-12-2"), Actor("t"))
    secret, _ = await site.store.tokens.create("otto", "erp")
    for name in ("api-queue", "api-refused"):
        first, headers, body = http(found[name])
        method, path = first.split(" ")
        headers["Authorization"] = headers["Authorization"].replace("<token>", secret)
        browser = site.browser()
        code, _, text = await browser.request(method, path, headers=headers, data=body.encode())
        status, _, want = http(found[f"{name}-answer"])
        assert code == int(status.split(" ")[1]), (name, text)
        assert steady(json.loads(text)) == steady(json.loads(want)), name
    assert len(await site.store.commands.recent()) == 1  # the refused one is not queued
    basic = base64.b64encode(f"otto:{PASSWORD}".encode()).decode()
    code, _, text = await site.browser().request(
        "POST",
        "/soap",
        data=found["soap-request"].encode(),
        headers={"Content-Type": "text/xml; charset=utf-8", "Authorization": f"Basic {basic}"},
    )
    assert code == 200, text
    assert xml_items(text) == xml_items(found["soap-answer"])
    assert len(await site.store.commands.recent()) == 2
