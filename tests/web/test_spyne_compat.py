"""sac.web.spyne_compat: a spyne SOAP application under Klein on a real port of 127.0.0.1,
driven by zeep (in a thread of the test: zeep blocks) and by raw HTTP through treq."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import requests
import treq
import zeep
import zeep.exceptions
from klein import Klein
from lxml import etree
from spyne import Application, Fault, Integer, Service, Unicode, rpc
from spyne.auxproc.sync import SyncAuxProc
from spyne.protocol.soap import Soap11
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher
from twisted.python.threadable import isInIOThread
from twisted.web.server import Site

from sac.web.spyne_compat import DEFAULT_MAX_BODY, SoapResource

ROOT = Path(__file__).resolve().parents[2]
TNS = "urn:sac:test:spyne-compat"
MAX_BODY = 4096
WSDL = "{http://schemas.xmlsoap.org/wsdl/}"
SOAP_ENV = "{http://schemas.xmlsoap.org/soap/envelope/}"
INCIDENT = re.compile(r"internal error, incident ([0-9a-f]{12})")

ran_on_reactor: list[bool] = []
held: list[tuple[Deferred[str], Any]] = []  # (the answer to give, the HTTP request)


class Api(Service):
    @rpc(Unicode, _returns=Unicode)
    async def echo(ctx, text):
        ran_on_reactor.append(isInIOThread())
        return await deferLater(reactor, 0.01, lambda: f"echo: {text}")

    @rpc(Unicode, Integer, _returns=Unicode)
    def repeat(ctx, text, times):  # a plain function answering a Deferred
        ran_on_reactor.append(isInIOThread())
        return deferLater(reactor, 0, lambda: text * times)

    @rpc(Unicode, _returns=Unicode)
    async def refuse(ctx, text):
        await deferLater(reactor, 0, lambda: None)
        raise Fault(faultcode="Client.BadInput", faultstring=f"no thanks: {text}")

    @rpc(Unicode, _returns=Unicode)
    def refuse_now(ctx, text):
        raise Fault(faultcode="Client.BadInput", faultstring="refused at once")

    @rpc(Unicode, _returns=Unicode)
    async def crash(ctx, text):
        await deferLater(reactor, 0, lambda: None)
        raise RuntimeError(f"secret detail {text}")

    @rpc(Unicode, _returns=Unicode)
    def crash_now(ctx, text):
        raise RuntimeError("secret detail too")

    @rpc(Unicode, _returns=Integer)
    async def wrong_type(ctx, text):
        return "not a number"  # spyne cannot serialise this as an integer

    @rpc(_returns=Unicode)
    async def whoami(ctx):
        request = ctx.transport.req
        auth = request.getHeader(b"authorization")
        if auth is None:
            raise Fault(faultcode="Client.Authentication", faultstring="who are you?")
        peer = ctx.transport.get_peer()
        return f"{request.getClientAddress().host} {peer.host} {auth.decode()}"

    @rpc(_returns=Unicode)
    async def troubled(ctx):  # see test_the_request_is_ended_even_when_no_fault_can_be_made
        return "fine"

    @rpc(Unicode, _returns=Unicode)
    async def hold(ctx, text):
        answer: Deferred[str] = Deferred()
        held.append((answer, ctx.transport.req))
        return await answer


def trouble(ctx: Any) -> None:
    if ctx.method_name == "troubled":
        raise RuntimeError("a spyne event handler fails after the answer was made")


class Served:
    def __init__(self, port: Any, resource: SoapResource) -> None:
        self.port = port
        self.resource = resource
        self.url = f"http://127.0.0.1:{port.getHost().port}/soap"


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    app = Application(
        [Api],
        tns=TNS,
        name="CompatTest",
        in_protocol=Soap11(validator="lxml"),
        out_protocol=Soap11(),
    )
    app.event_manager.add_listener("method_context_closed", trouble)
    resource = SoapResource(app, max_body=MAX_BODY)
    web = Klein()

    @web.route("/soap", branch=True)
    def soap(request: Any) -> SoapResource:
        return resource

    endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
    port = pytest_twisted.blockon(endpoint.listen(Site(web.resource())))
    yield Served(port, resource)
    pytest_twisted.blockon(port.stopListening())


@pytest.fixture
def logged() -> Iterator[list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


async def http(method: str, url: str, **kw: Any) -> tuple[int, dict[str, str], bytes]:
    response = await treq.request(method, url, persistent=False, **kw)
    body = await response.content()
    heads = {k.decode().lower(): v[0].decode() for k, v in response.headers.getAllRawHeaders()}
    return response.code, heads, body


def envelope(operation: str, inner: str = "<t:text>hi</t:text>") -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"'
        f' xmlns:t="{TNS}"><soap:Body><t:{operation}>{inner}</t:{operation}>'
        "</soap:Body></soap:Envelope>"
    ).encode()


async def post(
    url: str, body: bytes, content_type: str | None = "text/xml; charset=utf-8"
) -> tuple[int, dict[str, str], bytes]:
    headers = {} if content_type is None else {"Content-Type": content_type}
    return await http("POST", url, data=body, headers=headers)


def fault_of(body: bytes) -> tuple[str, str]:
    """The (faultcode, faultstring) of a SOAP 1.1 fault answer."""
    fault = etree.fromstring(body).find(f"{SOAP_ENV}Body/{SOAP_ENV}Fault")
    assert fault is not None, body
    return fault.findtext("faultcode"), fault.findtext("faultstring")


class Zeep:
    """A zeep client whose every (blocking) call runs in a thread while the reactor serves."""

    def __init__(self, client: zeep.Client) -> None:
        self.client = client

    @classmethod
    async def connect(cls, wsdl: str, auth: Any = None) -> Zeep:
        session = requests.Session()
        session.auth = auth
        transport = zeep.Transport(session=session)
        return cls(await deferToThread(zeep.Client, wsdl, transport=transport))

    async def call(self, operation: str, *args: Any) -> Any:
        return await deferToThread(self.client.service[operation], *args)

    async def fault(self, operation: str, *args: Any) -> zeep.exceptions.Fault:
        try:
            await self.call(operation, *args)
        except zeep.exceptions.Fault as fault:
            return fault
        raise AssertionError(f"{operation} did not fail")

    def close(self) -> None:
        self.client.transport.session.close()


@pytest_twisted.ensureDeferred
async def test_the_wsdl_names_the_operations_and_where_to_call_them(served: Served) -> None:
    code, heads, body = await http("GET", served.url + "?wsdl")
    assert code == 200
    assert heads["content-type"] == "text/xml; charset=utf-8"
    root = etree.fromstring(body)
    operations = {op.get("name") for op in root.iter(f"{WSDL}operation")}
    assert {"echo", "repeat", "refuse", "crash", "whoami"} <= operations
    addresses = [a.get("location") for a in root.iterfind(f".//{WSDL}port/*[@location]")]
    assert addresses == [served.url]

    # The location follows the Host the client used (a name, not only an address) ...
    code, _, body = await http("GET", served.url + "?WSDL", headers={"Host": "sac.example:8443"})
    assert code == 200
    addresses = [a.get("location") for a in etree.fromstring(body).iter() if a.get("location")]
    assert addresses == ["http://sac.example:8443/soap"]
    # ... unless it is no host name, when the listening address stands in.
    code, _, body = await http("GET", served.url + "?wsdl", headers={"Host": 'x"><evil'})
    assert code == 200
    assert b"evil" not in body
    assert served.url.encode() in body


@pytest_twisted.ensureDeferred
async def test_zeep_calls_coroutines_and_deferreds_on_the_reactor(served: Served) -> None:
    ran_on_reactor.clear()
    client = await Zeep.connect(served.url + "?wsdl")
    try:
        assert await client.call("echo", "ciao") == "echo: ciao"
        assert await client.call("echo", "àèìòù €") == "echo: àèìòù €"
        assert await client.call("repeat", "ab", 3) == "ababab"
    finally:
        client.close()
    assert ran_on_reactor == [True, True, True]


@pytest_twisted.ensureDeferred
async def test_a_methods_fault_reaches_the_client_as_it_was_raised(served: Served) -> None:
    client = await Zeep.connect(served.url + "?wsdl")
    try:
        fault = await client.fault("refuse", "this")
        assert fault.code.split(":")[-1] == "Client.BadInput"
        assert fault.message == "no thanks: this"
        fault = await client.fault("refuse_now", "this")
        assert (fault.code.split(":")[-1], fault.message) == ("Client.BadInput", "refused at once")
    finally:
        client.close()
    code, heads, body = await post(served.url, envelope("refuse"))
    assert code == 500  # SOAP 1.1 over HTTP: every fault
    assert heads["content-type"] == "text/xml; charset=utf-8"
    assert fault_of(body) == ("soap11env:Client.BadInput", "no thanks: hi")


@pytest_twisted.ensureDeferred
async def test_any_other_exception_is_an_incident_the_client_sees_only_by_number(
    served: Served, logged: list[dict[str, Any]]
) -> None:
    client = await Zeep.connect(served.url + "?wsdl")
    try:
        seen = []
        for operation in ("crash", "crash_now", "wrong_type"):
            fault = await client.fault(operation, "x")
            assert fault.code.split(":")[-1] == "Server"
            found = INCIDENT.fullmatch(fault.message)
            assert found, fault.message
            seen.append(found.group(1))
    finally:
        client.close()
    code, _, body = await post(served.url, envelope("crash"))
    assert code == 500
    faultcode, message = fault_of(body)
    assert faultcode == "soap11env:Server"
    assert INCIDENT.fullmatch(message)
    assert b"secret" not in body and b"Traceback" not in body and b"RuntimeError" not in body

    failures = {e.get("incident"): e["log_failure"] for e in logged if "log_failure" in e}
    assert failures[seen[0]].check(RuntimeError)
    assert "secret detail x" in failures[seen[0]].getTraceback()
    assert failures[seen[1]].check(RuntimeError)
    assert seen[2] in failures  # the serialisation's error, logged the same way


@pytest_twisted.ensureDeferred
async def test_a_method_reads_the_authorization_header_and_the_client_address(
    served: Served,
) -> None:
    client = await Zeep.connect(served.url + "?wsdl", auth=("meter", "s3cret"))
    anonymous = await Zeep.connect(served.url + "?wsdl")
    try:
        assert await client.call("whoami") == "127.0.0.1 127.0.0.1 Basic bWV0ZXI6czNjcmV0"
        fault = await anonymous.fault("whoami")
        assert (fault.code.split(":")[-1], fault.message) == (
            "Client.Authentication",
            "who are you?",
        )
    finally:
        client.close()
        anonymous.close()


@pytest_twisted.ensureDeferred
async def test_only_post_and_get_wsdl_are_answered(served: Served) -> None:
    for method, query, allow in (
        ("GET", "", "POST"),
        ("PUT", "", "POST"),
        ("DELETE", "", "POST"),
        ("HEAD", "", "POST"),
        ("PUT", "?wsdl", "GET"),
        ("POST", "?wsdl", None),  # a call, as spyne has it: the query does not matter
    ):
        code, heads, _ = await http(
            method, served.url + query, data=envelope("echo"), headers={"Content-Type": "text/xml"}
        )
        if allow is None:
            assert code == 200
        else:
            assert (code, heads.get("allow")) == (405, allow), (method, query)


@pytest_twisted.ensureDeferred
async def test_a_body_over_the_limit_is_refused_unread(served: Served) -> None:
    assert inspect.signature(SoapResource).parameters["max_body"].default == 10 * 2**20
    assert DEFAULT_MAX_BODY == 10 * 2**20
    code, heads, body = await post(served.url, b"<" * (MAX_BODY + 1))
    assert code == 413
    assert heads["content-type"].startswith("text/plain")
    # At the limit it is read, and (not being XML) refused as the client's fault.
    code, _, body = await post(served.url, b"<" * MAX_BODY)
    assert code == 500
    assert fault_of(body)[0] == "soap11env:Client.XMLSyntaxError"


@pytest_twisted.ensureDeferred
async def test_bodies_that_are_no_soap_call_are_client_faults(served: Served) -> None:
    cases = [
        (b"this is not XML", "text/xml; charset=utf-8", "Client.XMLSyntaxError"),
        (b"", "text/xml; charset=utf-8", "Client.XMLSyntaxError"),
        (b"<a>plain XML</a>", "text/xml", "Client.SoapError"),
        (envelope("no_such_method"), "text/xml", "Client.SchemaValidationError"),
        (envelope("repeat", "<t:times>many</t:times>"), "text/xml", "Client.SchemaValidationError"),
        (envelope("echo"), "text/xml; charset=klingon", "Client.BadEncoding"),
        ("<a>é</a>".encode("latin-1"), "text/xml; charset=utf-8", "Client.BadEncoding"),
    ]
    for body, content_type, expected in cases:
        code, heads, answer = await post(served.url, body, content_type)
        assert code == 500, (body, answer)
        assert heads["content-type"] == "text/xml; charset=utf-8"
        faultcode, _ = fault_of(answer)
        assert faultcode == f"soap11env:{expected}", (body, answer)


ENV = "http://schemas.xmlsoap.org/soap/envelope/"


def raw_envelope(inside: str, prolog: str = "") -> bytes:
    return (
        f'<?xml version="1.0"?>{prolog}<soap:Envelope xmlns:soap="{ENV}" xmlns:t="{TNS}">'
        f"{inside}</soap:Envelope>"
    ).encode()


ENTITY = '<!DOCTYPE x [<!ENTITY e "hello">]>'
# envelopes spyne 2.14 crashed on (an AttributeError or lxml's "Internal error in XML Schema
# validation", answered as a Server fault with a CRITICAL traceback), and their neighbours
MALFORMED = {
    "a Fault as the call": raw_envelope(
        "<soap:Body><soap:Fault><faultcode>soap:Client</faultcode>"
        "<faultstring>x</faultstring></soap:Fault></soap:Body>"
    ),
    "an entity in a field": raw_envelope(
        "<soap:Body><t:echo><t:text>&e;</t:text></t:echo></soap:Body>", ENTITY
    ),
    "an external entity": raw_envelope(
        "<soap:Body><t:echo><t:text>&e;</t:text></t:echo></soap:Body>",
        '<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>',
    ),
    "nested entities": raw_envelope(
        "<soap:Body><t:echo><t:text>&c;</t:text></t:echo></soap:Body>",
        '<!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;">]>',
    ),
    "a DTD alone": raw_envelope("<soap:Body><t:echo/></soap:Body>", "<!DOCTYPE x>"),
    "an empty Body": raw_envelope("<soap:Body/>"),
    "a Body of whitespace": raw_envelope("<soap:Body>  \n </soap:Body>"),
    "a Body of text": raw_envelope("<soap:Body>hello</soap:Body>"),
    "a Header only": raw_envelope("<soap:Header/>"),
    "a Fault in the Header": raw_envelope("<soap:Header><soap:Fault/></soap:Header><soap:Body/>"),
    "two calls": raw_envelope("<soap:Body><t:echo/><t:echo/></soap:Body>"),
    "two Bodies": raw_envelope("<soap:Body><t:echo/></soap:Body><soap:Body><t:echo/></soap:Body>"),
    "a comment for a Body": raw_envelope("<soap:Body><!-- nothing --></soap:Body>"),
}


@pytest_twisted.ensureDeferred
async def test_malformed_envelopes_are_client_faults_without_a_traceback(
    served: Served, logged: list[dict[str, Any]]
) -> None:
    for name, body in MALFORMED.items():
        logged.clear()
        code, _, answer = await post(served.url, body)
        assert code == 500, (name, answer)
        faultcode, _ = fault_of(answer)
        assert faultcode == "soap11env:Client.SoapError", (name, answer)
        assert b"root:" not in answer and b"hello" not in answer, name
        assert not [e for e in logged if "log_failure" in e], name
        assert all(e["log_level"].name in ("debug", "info") for e in logged), name
    # the same call without the trouble is answered
    code, _, answer = await post(served.url, raw_envelope("<soap:Body><t:echo/></soap:Body>"))
    assert code == 200, answer


@pytest_twisted.ensureDeferred
async def test_a_call_must_say_it_is_soap_in_its_content_type(served: Served) -> None:
    for content_type in (None, "application/json", "text/plain", "application/xml", "x"):
        code, heads, answer = await post(served.url, envelope("echo"), content_type)
        assert code == 415, (content_type, answer)
        assert heads["content-type"].startswith("text/plain")
        assert b"text/xml" in answer and b"application/soap+xml" in answer
    for content_type in (
        "text/xml",
        "text/xml; charset=utf-8",
        "Text/XML;charset=UTF-8",
        "application/soap+xml; charset=utf-8",
    ):
        code, _, answer = await post(served.url, envelope("echo"), content_type)
        assert code == 200, (content_type, answer)


@pytest_twisted.ensureDeferred
async def test_the_wsdl_names_the_configured_location_whatever_the_host(served: Served) -> None:
    resource = served.resource
    resource.location = "https://sac.example.com/erp/soap"
    try:
        code, _, body = await http("GET", served.url + "?wsdl", headers={"Host": "evil.example"})
    finally:
        resource.location = None
    assert code == 200
    addresses = [a.get("location") for a in etree.fromstring(body).iter() if a.get("location")]
    assert addresses == ["https://sac.example.com/erp/soap"]
    assert b"evil" not in body


@pytest_twisted.ensureDeferred
async def test_the_request_is_ended_even_when_no_fault_can_be_made(
    served: Served, logged: list[dict[str, Any]]
) -> None:
    code, heads, body = await post(served.url, envelope("troubled", ""))
    assert (code, body) == (500, b"internal error\n")
    assert heads["content-type"].startswith("text/plain")
    (failure,) = [e["log_failure"] for e in logged if "log_failure" in e]
    assert failure.check(RuntimeError)


@pytest_twisted.ensureDeferred
async def test_a_client_that_hangs_up_before_the_answer_is_let_go(
    served: Served, logged: list[dict[str, Any]]
) -> None:
    body = envelope("hold")
    request = (
        b"POST /soap HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/xml\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    held.clear()
    hung_up: Deferred[None] = Deferred()

    class HangUp(Protocol):
        def connectionMade(self) -> None:
            self.transport.write(request)

        def connectionLost(self, reason: Any = None) -> None:
            hung_up.callback(None)

    client = HangUp()
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", served.port.getHost().port)
    await connectProtocol(endpoint, client)
    while not held:  # the method has started
        await deferLater(reactor, 0.001, lambda: None)
    answer, http_request = held[0]
    finished = http_request.notifyFinish()
    client.transport.loseConnection()
    await hung_up
    with pytest.raises(Exception):  # noqa: B017 -- the server saw the connection go
        await finished
    answer.callback("too late")
    await deferLater(reactor, 0, lambda: None)
    assert not [e for e in logged if "log_failure" in e]


def test_auxiliary_methods_are_refused_not_dropped() -> None:
    """spyne runs an auxiliary service's method of the same name after the primary one;
    the resource does not, so it will not serve an application that has them."""

    class Main(Service):
        @rpc(Unicode, _returns=Unicode)
        def echo(ctx, text):
            return text

    class Audit(Service):
        __aux__ = SyncAuxProc()

        @rpc(Unicode, _returns=Unicode)
        def echo(ctx, text):
            return text

    app = Application(
        [Main, Audit], tns="urn:sac:test:aux", in_protocol=Soap11(), out_protocol=Soap11()
    )
    with pytest.raises(ValueError, match="auxiliary"):
        SoapResource(app)


def test_importing_twice_needs_and_plants_no_twisted_python_constants() -> None:
    """No shim: the module never imports spyne.server.twisted, which needs the removed
    twisted.python.constants; nor does it put a fake one in sys.modules."""
    script = (
        "import importlib, sys\n"
        "import sac.web.spyne_compat as m\n"
        "importlib.reload(m)\n"
        "import sac.web.spyne_compat\n"
        "assert 'twisted.python.constants' not in sys.modules\n"
        "assert 'spyne.server.twisted' not in sys.modules\n"
        "try:\n"
        "    import twisted.python.constants\n"
        "except ImportError:\n"
        "    print('absent')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "absent\n"


def test_spyne_six_moves_import_without_the_find_module_that_python_3_12_ignores() -> None:
    """spyne's vendored six registers an importer with ``find_module`` alone, which Python
    3.12 no longer asks: ``spyne.util.six.moves`` must be found through ``find_spec``.  Shown
    on every version: every finder without ``find_spec`` taken off ``sys.meta_path`` (what
    3.12 ignores), six's modules import again.  A standard module six moves
    (``http.cookies``) keeps its own spec."""
    script = (
        "import sys\n"
        "import sac.web.soap\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if hasattr(f, 'find_spec')]\n"
        "for name in [n for n in sys.modules if n.startswith('spyne.util.six.moves')]:\n"
        "    del sys.modules[name]\n"
        "import spyne.util.six.moves.urllib.parse as parse\n"
        "import spyne.util.six.moves.http_cookies as cookies\n"
        "assert cookies is sys.modules['http.cookies'], cookies\n"
        "assert cookies.__spec__.name == 'http.cookies', cookies.__spec__\n"
        "print(parse.urlsplit('http://meter.invalid/a?b').path)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "/a\n"
