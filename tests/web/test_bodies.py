"""Request bodies are bounded before they are read, and the audit trail's lines are bounded
when written: over real HTTP on loopback, with raw sockets where the point is what the
server answers before the client has sent its body."""

from __future__ import annotations

import base64
import contextlib
import re
import socket
from collections.abc import Iterable

import pytest
import pytest_twisted
from treq.client import HTTPClient
from twisted.internet import defer, reactor, threads
from twisted.web.client import Agent

from sac.web import bodies
from sac.web.bodies import FORM_BODY
from tests.store.conftest import Backend
from tests.web.conftest import PASSWORD, Site, make_site
from tests.web.test_access import POLICY
from tests.web.test_sign_in import Listening

MIB = 2**20
DEADLINE = 10.0  # seconds a raw client waits for an answer (the old code never gave one)


@pytest.fixture
def site(backend: Backend) -> Site:
    return pytest_twisted.blockon(defer.Deferred.fromCoroutine(make_site(backend)))


def _exchange(port: int, head: bytes, body: Iterable[bytes], until_close: bool) -> bytes:
    """Send ``head`` then ``body`` (stopping when the server answers), and what came back:
    up to the end of the answer's head, or everything until the server closes (which it must
    within DEADLINE)."""
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as conn:
        conn.sendall(head)
        conn.setblocking(False)
        got = b""
        for part in body:
            with contextlib.suppress(BlockingIOError):
                got += conn.recv(65536)
            if got:
                break
            conn.sendall(part)
        conn.settimeout(DEADLINE)
        try:
            while True:
                more = conn.recv(65536)
                got += more
                if not more or (not until_close and b"\r\n\r\n" in got):
                    break
        except TimeoutError:
            if until_close:
                raise AssertionError(f"not closed within {DEADLINE} s: {got[:300]!r}") from None
        return got


async def exchange(
    listening: Listening, head: bytes, body: Iterable[bytes] = (), until_close: bool = False
) -> bytes:
    port = listening.port.getHost().port
    return await threads.deferToThread(_exchange, port, head, body, until_close)


def post_head(path: str, length: int | None, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: sac.test", *headers]
    if length is None:
        lines.append("Transfer-Encoding: chunked")
    else:
        lines.append(f"Content-Length: {length}")
    lines.append("Content-Type: application/x-www-form-urlencoded")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def status(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), f"no answer before the body was sent: {answer!r}"
    return int(answer[9:12])


def header(answer: bytes, name: str) -> str:
    found = re.search(rf"^{name}: ([^\r]*)\r$", answer.decode("latin-1"), re.M | re.I)
    return found.group(1) if found else ""


FORMS = sorted(
    path
    for (method, rule), (_, path) in POLICY.items()
    if method == "POST" and not path.startswith(("/api/", "/soap", "/meters/import"))
)


@pytest_twisted.ensureDeferred
async def test_a_form_body_over_the_limit_is_refused_before_it_is_sent(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every form (the sign-in's too) declaring more than 64 KiB is answered 413 at once, a
    byte of its body unsent; a chunked body, the moment it goes over; and the connection
    is closed cleanly once the client has sent what it declared."""
    # only the body all in may close the connection within DEADLINE (not the drain's bound)
    monkeypatch.setattr(bodies, "DRAIN_SECONDS", 60.0)
    assert "/login" in FORMS and "/meters/new" in FORMS and "/admin/users" in FORMS
    listening = Listening(site.web)
    try:
        for path in FORMS:
            answer = await exchange(listening, post_head(path, 30 * MIB))
            assert status(answer) == 413, path
            assert header(answer, "connection") == "close"
        # just at the limit: read, and answered by the page (the form is stale)
        answer = await exchange(listening, post_head("/login", FORM_BODY), [b"x" * FORM_BODY])
        assert status(answer) == 403
        # chunked: counted as it comes
        chunks = (b"%x\r\n%s\r\n" % (8192, b"u" * 8192) for _ in range(100))
        answer = await exchange(listening, post_head("/login", None), chunks)
        assert status(answer) == 413
        # a body sent whole after the head is read and dropped, then the answer is whole
        whole = post_head("/login", 4 * 65536) + b"x" * (4 * 65536)
        answer = await exchange(listening, whole, until_close=True)
        assert status(answer) == 413 and answer.endswith(b"bytes\n")
    finally:
        await listening.close()


@pytest_twisted.ensureDeferred
async def test_a_30_mb_user_name_is_refused_and_never_audited(site: Site) -> None:
    """The attack as it was: a sign-in with a 30 MB user name (the form's CSRF right)."""
    listening = Listening(site.web)
    try:
        http = HTTPClient(Agent(reactor))
        csrf, cookie = await login_form(http, listening)
        answer = await http.post(
            listening.base + "/login",
            data={"username": "u" * (30 * MIB), "password": "x", "csrf": csrf},
            headers={"Cookie": cookie},
        )
        assert answer.code == 413, answer.code
        await answer.text()
        assert not [e for e in await site.store.audit.log() if e.action.startswith("sign-in")]
    finally:
        await listening.close()


@pytest_twisted.ensureDeferred
async def test_an_upload_without_a_session_is_refused_before_its_body(site: Site) -> None:
    """The key CSV import: no session (or a made-up one) is sent to the sign-in, a viewer is
    refused, before a byte of a 10 MB body; an operator's upload is read and answered."""
    listening = Listening(site.web)
    try:
        head = post_head("/meters/import", 10 * MIB)
        answer = await exchange(listening, head)
        assert status(answer) == 303
        assert header(answer, "location") == "/login?next=%2Fmeters%2Fimport"
        made_up = post_head("/meters/import", 10 * MIB, "Cookie: sac_session=made-up")
        assert status(await exchange(listening, made_up)) == 303
        viewer = await sign_in(listening, "vera")
        answer = await exchange(listening, post_head("/meters/import", 10 * MIB, viewer))
        assert status(answer) == 403
        # an operator: the body is read (a 1 MB file of wrong lines: the errors page)
        operator = await sign_in(listening, "otto")
        csrf = await page_csrf(listening, operator)
        boundary = "sacboundary"
        csv = b"ldn;ek\n" + b"NOTANLDN;00\n" * 90_000
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n{csrf}\r\n',
            f'--{boundary}\r\nContent-Disposition: form-data; name="file";'
            ' filename="keys.csv"\r\nContent-Type: text/csv\r\n\r\n',
        ]
        body = "".join(parts).encode() + csv + f"\r\n--{boundary}--\r\n".encode()
        assert len(body) > 10 * FORM_BODY
        head = (
            "POST /meters/import HTTP/1.1\r\nHost: sac.test\r\n"
            f"{operator}\r\nContent-Length: {len(body)}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n"
        ).encode()
        pieces = [body[i : i + 65536] for i in range(0, len(body), 65536)]
        answer = await exchange(listening, head, pieces, until_close=False)
        assert status(answer) == 422, answer[:300]
    finally:
        await listening.close()


async def login_form(http: HTTPClient, listening: Listening) -> tuple[str, str]:
    """The sign-in form's CSRF token and the session cookie that goes with it."""
    form = await http.get(listening.base + "/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', await form.text()).group(1)
    return csrf, form.headers.getRawHeaders("set-cookie")[0].split(";")[0]


async def sign_in(listening: Listening, name: str) -> str:
    """A session's cookie header."""
    http = HTTPClient(Agent(reactor))
    csrf, cookie = await login_form(http, listening)
    answer = await http.post(
        listening.base + "/login",
        data={"username": name, "password": PASSWORD, "csrf": csrf},
        headers={"Cookie": cookie},
        allow_redirects=False,
    )
    assert answer.code == 303
    session = answer.headers.getRawHeaders("set-cookie")[0].split(";")[0]
    return f"Cookie: {session}"


async def page_csrf(listening: Listening, cookie: str) -> str:
    http = HTTPClient(Agent(reactor))
    name, _, value = cookie.partition(": ")
    page = await (await http.get(listening.base + "/meters/import", headers={name: value})).text()
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


@pytest_twisted.ensureDeferred
async def test_audit_lines_are_bounded(site: Site, backend: Backend) -> None:
    """What comes from outside is cut where the audit line is written: a 50,000-character
    user name on a failed sign-in, a 4 MB LDN in a SOAP call."""
    listening = Listening(site.web)
    try:
        http = HTTPClient(Agent(reactor))
        csrf, cookie = await login_form(http, listening)
        answer = await http.post(
            listening.base + "/login",
            data={"username": "u" * 50_000, "password": "x", "csrf": csrf},
            headers={"Cookie": cookie},
        )
        assert answer.code == 403
        await answer.text()
        basic = base64.b64encode(f"vera:{PASSWORD}".encode()).decode()
        envelope = (
            '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"'
            ' xmlns:tns="urn:sac:erp:1"><soap:Body><tns:GetMeter><tns:ldn>'
            + "L" * (4 * MIB)
            + "</tns:ldn></tns:GetMeter></soap:Body></soap:Envelope>"
        )
        answer = await http.post(
            listening.base + "/soap",
            data=envelope.encode(),
            headers={"Content-Type": "text/xml; charset=utf-8", "Authorization": f"Basic {basic}"},
        )
        await answer.text()
        [(actor, target, detail)] = backend.raw(
            "SELECT max(length(actor)), max(length(target)), max(length(detail)) FROM audit"
        )
        assert actor <= 100 and (target or 0) <= 200 and (detail or 0) <= 2000
        entries = await site.store.audit.log()
        assert any(e.actor == "u" * 99 + "\u2026" for e in entries)
        assert any(e.target == "L" * 199 + "\u2026" for e in entries)
    finally:
        await listening.close()
