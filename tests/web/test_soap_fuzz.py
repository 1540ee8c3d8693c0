"""Malformed SOAP calls into the SAC's real /soap (real HTTP on 127.0.0.1, a real store):
envelopes of every operation, signed in and not, cut, doubled and spiked with what crashed
spyne before (a Fault as the call, entities, an empty Body, numbers over 2**63).  Every
answer is a client fault or a real answer, never a Server fault, and nothing is logged
above info, nor any traceback."""

from __future__ import annotations

import base64
import random
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
import treq
from lxml import etree
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.logger import globalLogPublisher
from twisted.web.server import Site

from sac.store import Role
from sac.web.soap import NS
from tests.store.conftest import Backend
from tests.web.conftest import PASSWORD, make_site

ENV = "http://schemas.xmlsoap.org/soap/envelope/"
CALLS = [
    "<t:ListMeters><t:limit>5</t:limit></t:ListMeters>",
    "<t:GetMeter><t:ldn>FIO0000012345678</t:ldn></t:GetMeter>",
    "<t:GetReadings><t:ldn>FIO0000012345678</t:ldn><t:start>2026-01-01T00:00:00Z</t:start>"
    "<t:end>2026-02-01T00:00:00Z</t:end><t:limit>10</t:limit></t:GetReadings>",
    "<t:ExportIndexReadings><t:start>2026-01-01T00:00:00Z</t:start>"
    "<t:end>2026-02-01T00:00:00Z</t:end><t:cursor>abc</t:cursor></t:ExportIndexReadings>",
    "<t:GetEvents><t:start>2026-01-01T00:00:00+01:00</t:start>"
    "<t:end>2026-02-01T00:00:00Z</t:end></t:GetEvents>",
    "<t:GetValveState><t:ldn>FIO0000012345678</t:ldn></t:GetValveState>",
    "<t:RequestValve><t:ldn>FIO0000012345678</t:ldn><t:action>close</t:action></t:RequestValve>",
    "<t:GetCommandStatus><t:id>1</t:id></t:GetCommandStatus>",
]
SPIKES = [
    "&e;",
    "&amp;",
    "&#0;",
    '<!DOCTYPE x [<!ENTITY e "boom">]>',
    f'<soap:Fault xmlns:soap="{ENV}"><faultcode>x</faultcode></soap:Fault>',
    "<soap:Body/>",
    "</soap:Body>",
    "<soap:Header/>",
    "99999999999999999999999",
    "-9223372036854775809",
    "NaN",
    "9999-12-31T23:59:59+14:00",
    "0000-01-01T00:00:00Z",
    '<t:ldn xsi:nil="true" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"/>',
    "<![CDATA[x]]>",
    "<?pi x?>",
    "é€",
    "<t:limit>0</t:limit>",
    "<t:limit>100000</t:limit>",
    "",
]


def envelope(call: str) -> str:
    return (
        f'<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="{ENV}"'
        f' xmlns:t="{NS}"><soap:Body>{call}</soap:Body></soap:Envelope>'
    )


def mutated(rng: random.Random) -> bytes:
    text = envelope(rng.choice(CALLS))
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        kind = rng.randrange(8)
        if kind < 4:  # a spike between tags or in a value, where the XML stays whole
            bounds = [i + 1 for i, c in enumerate(text) if c == ">"]
            at = rng.choice(bounds[1:-2] or bounds)
            text = text[:at] + rng.choice(SPIKES) + text[at:]
        elif kind < 6:  # the call's fields replaced by a spike, or the call by one
            call = rng.choice(CALLS)
            name = call[1 : call.index(">")]
            inner = rng.choice(SPIKES)
            text = envelope(rng.choice((f"<{name}>{inner}</{name}>", inner)))
        elif kind == 6:  # a cut anywhere
            at = rng.randrange(len(text))
            text = text[:at] + text[at + rng.randint(1, 40) :]
        else:  # a doubled span
            at = rng.randrange(len(text))
            text = text[:at] + text[at : at + rng.randint(1, 60)] + text[at:]
    return text.encode()


@pytest.fixture
def logged() -> Iterator[list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


@pytest_twisted.ensureDeferred
async def test_malformed_calls_are_client_faults_and_log_no_traceback(
    sqlite: Backend, logged: list[dict[str, Any]]
) -> None:
    site = await make_site(sqlite)
    await site.store.users.add("erp", PASSWORD, Role.OPERATOR)
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        Site(site.web.resource())
    )
    url = f"http://127.0.0.1:{port.getHost().port}/soap"
    basic = base64.b64encode(f"erp:{PASSWORD}".encode()).decode()
    rng = random.Random(18)
    seen: dict[str, int] = {}
    try:
        for i in range(400):
            body = mutated(rng)
            headers = {"Content-Type": "text/xml; charset=utf-8"}
            if i % 2:
                headers["Authorization"] = f"Basic {basic}"
            answer = await treq.post(url, data=body, headers=headers, persistent=False)
            content = await answer.content()
            if answer.code == 200:
                seen["answered"] = seen.get("answered", 0) + 1
                continue
            assert answer.code == 500, (body, content)
            fault = etree.fromstring(content).find(f"{{{ENV}}}Body/{{{ENV}}}Fault")
            assert fault is not None, (body, content)
            code = fault.findtext("faultcode").rpartition(":")[2]
            assert code.startswith("Client"), (body, content)
            assert b"boom" not in content, (body, content)
            seen[code] = seen.get(code, 0) + 1
    finally:
        await port.stopListening()
    loud = [e for e in logged if e["log_level"].name not in ("debug", "info")]
    assert not loud, [e.get("log_format") for e in loud]
    assert not [e for e in logged if "log_failure" in e]
    # the run reached past the parser: schema and operation faults too, and real answers
    assert {"Client.SoapError", "Client.XMLSyntaxError", "Client.SchemaValidationError"} <= set(
        seen
    ), seen
    parsing = {"Client.SoapError", "Client.XMLSyntaxError", "Client.SchemaValidationError"}
    assert sum(n for code, n in seen.items() if code not in parsing) >= 20, seen
