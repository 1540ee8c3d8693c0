"""Issue 9, secrets, end to end: after a full run of ``twistd -n sac`` no meter key and not
the master key appears, in any form, in any log line, page, API or SOAP answer, exception
message, ``sac-admin`` output, the spool or a dump of the database; and the keys table holds
ciphertext that opens with the master key.

One run, on PostgreSQL and on SQLite: the SAC with JSON logs to a file at debug level, a
spool, push and web listeners and the poll scheduler.  Meters are provisioned in every way an
operator can: the add-meter form, a key CSV on the import page (preview, confirm), the JSON
API's bulk add with keys (and a PATCH that replaces a key), ``sac-admin import-keys``; each
with bad inputs made from the real keys (a key one byte short or long, not hex, in the wrong
column, for a meter that does not exist or already has keys, a conflicting add carrying a
good key), so that an error message echoing what it was given would hold a key.  Then the
fleet pushes (with a wrong key: the push does not authenticate; without a key; while the
store is locked, so pushes go to the spool and are replayed), a valve command runs, the
poller dials a meter with its key and one with a wrong key, SOAP operations and JSON API
reads are called, and every GET route of the router is fetched as an admin.

The scan looks for each secret as hex (any case, whole, its first and last 8 bytes, with
spaces or colons), raw bytes, latin-1 text (raw and JSON-escaped), the Python repr of the
bytes (raw, JSON-escaped, HTML-escaped) and base64 / base64url at the three alignments a key
can have inside a longer encoding.  :func:`test_the_scan_finds_a_key_in_every_form` shows
that each form is found when planted.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import io
import json
import re
import signal
import sqlite3
import subprocess
import sys
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import pytest_twisted
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.web.client import Agent, HTTPConnectionPool

from sac.keys import MasterKey, key_place, wrapped_by
from sac.web.app import RANGES, SORTS, STATIC, route_rules
from tests.acquisition.conftest import REGISTRY, make_fleet, push_once
from tests.run.twistd import Twistd, port
from tests.store.conftest import Backend, backend, postgres  # noqa: F401 -- fixtures

VENV_BIN = Path(sys.executable).parent
PROFILE = "uni-ts-11291-12-2"
SAP = int(REGISTRY[PROFILE].clients["management"])
PASSWORD = "correct horse battery staple"


def _derived(label: str, size: int = 16) -> bytes:
    """A fixed secret of this test (not a constant pattern: a stray match is impossible)."""
    return hashlib.sha256(f"sac secrets test: {label}".encode()).digest()[:size]


MASTER = MasterKey(_derived("master key", 32))
ENV = {"SAC_MASTER_KEY": MASTER.secret.hex()}


# --- the forms of a secret, and the scan --------------------------------------------------


def secret_forms(value: bytes) -> dict[str, tuple[bytes, bool]]:
    """Every form ``value`` may take in a text or a file: form -> (needle, any case)."""
    hexed = value.hex()
    inner = repr(value)[2:-1]  # b'...' without b and the quotes
    forms = {
        "hex": (hexed.encode(), True),  # lowercase, uppercase, mixed
        "hex, its first 8 bytes": (hexed[:16].encode(), True),  # a key cut short
        "hex, its last 8 bytes": (hexed[-16:].encode(), True),
        "hex with spaces": (value.hex(" ").encode(), True),
        "hex with colons": (value.hex(":").encode(), True),
        "raw bytes": (value, False),
        "latin-1 text as UTF-8": (value.decode("latin-1").encode(), False),
        "latin-1 text in JSON": (json.dumps(value.decode("latin-1"))[1:-1].encode(), False),
        "Python repr": (inner.encode(), False),
        "Python repr in JSON": (json.dumps(inner)[1:-1].encode(), False),
        "Python repr in HTML": (html.escape(inner).encode(), False),
    }
    for shift in range(3):
        for name, encode in (("base64", base64.b64encode), ("base64url", base64.urlsafe_b64encode)):
            text = encode(bytes(shift) + value)
            # the characters made of the value's bits alone, wherever it starts in a longer
            # encoding (at a byte offset of 0, 1 or 2 modulo 3)
            first, end = -(-8 * shift // 6), 8 * (shift + len(value)) // 6
            forms[f"{name} at offset {shift}"] = (text[first:end], False)
    return forms


class Scan:
    """Every form of every secret looked for in every source given."""

    def __init__(self, secrets: dict[str, bytes]) -> None:
        self.needles = [
            (name, form, needle.lower() if caseless else needle, caseless)
            for name, value in secrets.items()
            for form, (needle, caseless) in secret_forms(value).items()
        ]
        self.forms = len(secret_forms(b"\0" * 16))
        self.sources: dict[str, int] = {}  # kind: how many
        self.sizes: dict[str, int] = {}  # kind: bytes
        self.hits: list[str] = []

    def __call__(self, kind: str, where: str, data: bytes) -> None:
        self.sources[kind] = self.sources.get(kind, 0) + 1
        self.sizes[kind] = self.sizes.get(kind, 0) + len(data)
        lower = data.lower()
        for name, form, needle, caseless in self.needles:
            at = (lower if caseless else data).find(needle)
            if at >= 0:
                context = data[max(0, at - 60) : at + len(needle) + 20]
                self.hits.append(f"{kind} {where}: {name} as {form}, at byte {at}: {context!r}")


def test_the_scan_finds_a_key_in_every_form() -> None:
    key = _derived("planted key")
    noise = _derived("noise", 32) * 8
    scan = Scan({"planted": key})
    for form, (needle, caseless) in secret_forms(key).items():
        planted = needle.upper() if caseless else needle
        scan("planted", form, noise + planted + noise)
    found = {hit.split(": ", 1)[0] for hit in scan.hits}
    assert found == {f"planted {form}" for form in secret_forms(key)}
    # the way such forms come about: inside longer encodings, at any alignment
    for before in range(3):
        data = _derived("prefix", 5)[:before] + key + b"tail"
        for where, text in {
            "base64": base64.b64encode(data),
            "base64url": base64.urlsafe_b64encode(data),
            "JSON of a bytes repr": json.dumps({"e": repr(data)}).encode(),
            "JSON of a latin-1 text": json.dumps({"e": data.decode("latin-1")}).encode(),
            "HTML of a bytes repr": html.escape(repr(data)).encode(),
            "an f-string": f"key={data!r} hex={data.hex().upper()}".encode(),
        }.items():
            scan.hits.clear()
            scan("encoded", where, noise + text + noise)
            assert scan.hits, (before, where)
    scan.hits.clear()
    scan("clean", "noise", noise + key[:-1] + b"!" + noise)
    assert not scan.hits


# --- the SAC's log file -------------------------------------------------------------------


class LogFile:
    """The JSON lines twistd writes to ``[log] file``, read as they come."""

    def __init__(self, path: Path, sac: Twistd) -> None:
        self.path = path
        self.sac = sac

    def events(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        found = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            if line.startswith("{") and line.endswith("}"):
                found.append(json.loads(line))
        return found

    def matching(self, part: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if part in e["message"]]

    async def wait_for(
        self, part: str, count: int = 1, timeout: float = 60.0
    ) -> list[dict[str, Any]]:
        """The lines holding ``part``, once there are ``count`` (the timeout only ends a run
        that went wrong: nothing is asserted about time)."""
        deadline = reactor.seconds() + timeout
        while reactor.seconds() < deadline:
            found = self.matching(part)
            if len(found) >= count:
                return found
            if self.sac.process.poll() is not None:
                break
            await deferLater(reactor, 0.05, lambda: None)
        raise AssertionError(
            f"not {count} lines with {part!r} in the log:\n"
            + (self.path.read_text() if self.path.exists() else "")
            + self.sac.output
        )


# --- a client of the web port -------------------------------------------------------------


class Http:
    """One client over real HTTP: its cookies, the last CSRF token of a page, and every
    answer (headers and body) kept for the scan."""

    def __init__(self, base: str, answers: list[tuple[str, bytes]], bearer: str = "") -> None:
        self.base = base
        self.answers = answers
        self.bearer = bearer
        self.cookies: dict[str, str] = {}
        self.csrf = ""
        self.client = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))

    async def request(
        self,
        method: str,
        path: str,
        *,
        form: dict[str, str] | None = None,
        files: dict[str, Any] | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], str]:
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if self.bearer:
            sent["Authorization"] = f"Bearer {self.bearer}"
        kw: dict[str, Any] = {}
        if body is not None:
            kw["data"] = body if isinstance(body, bytes) else json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        elif form is not None:
            kw["data"] = {"csrf": self.csrf, **form}
            if files:
                kw["files"] = files
        response = await self.client.request(
            method, self.base + path, headers=sent, allow_redirects=False, **kw
        )
        content = await response.content()
        raw = response.headers.getAllRawHeaders()
        heads = {k.decode().lower(): b", ".join(v).decode("latin-1") for k, v in raw}
        for value in response.headers.getRawHeaders("set-cookie", []):
            jar: SimpleCookie = SimpleCookie()
            jar.load(value)
            for name, morsel in jar.items():
                if morsel.value == "" or morsel["max-age"] == "0":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        text = content.decode("utf-8", "replace")
        found = re.search(r'name="csrf" value="([^"]+)"', text)
        if found:
            self.csrf = found.group(1)
        head_bytes = b"".join(k + b": " + b", ".join(v) + b"\n" for k, v in raw)
        self.answers.append((f"{method} {path} -> {response.code}", head_bytes + b"\n" + content))
        return response.code, heads, text

    async def get(self, path: str, **kw: Any) -> tuple[int, dict[str, str], str]:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, form: dict[str, str], **kw: Any):
        return await self.request("POST", path, form=form, **kw)

    async def json(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        code, _, text = await self.request(method, path, body=body)
        return code, json.loads(text) if text else None

    async def sign_in(self, name: str) -> None:
        await self.get("/login")
        code, _, text = await self.post("/login", {"username": name, "password": PASSWORD})
        assert code == 303, (code, text)
        await self.get("/meters")  # the session's CSRF token


def soap(operation: str, **args: str) -> bytes:
    inner = "".join(f"<tns:{k}>{v}</tns:{k}>" for k, v in args.items())
    return (
        '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"'
        ' xmlns:tns="urn:sac:erp:1"><soap:Body>'
        f"<tns:{operation}>{inner}</tns:{operation}></soap:Body></soap:Envelope>"
    ).encode()


# --- the run ------------------------------------------------------------------------------


def write_config(tmp_path: Path, address: str) -> Path:
    path = tmp_path / "sac.ini"
    path.write_text(
        f"[store]\naddress = {address}\nconnections = 2\n"
        "[push]\nlisten = tcp:0:interface=127.0.0.1\n"
        f"spool = {tmp_path / 'spool'}\nstore_timeout = 0.5\nresponse_timeout = 5\n"
        "[poll]\nretry_first = 1\nconnect_timeout = 5\nresponse_timeout = 5\n"
        "session_budget = 30\n"
        "[web]\nlisten = tcp:0:interface=127.0.0.1\nsecure_cookies = no\n"
        f"[log]\nformat = json\nlevel = debug\nfile = {tmp_path / 'log' / 'sac.log'}\n"
        "[sac]\nname = secrets-under-test\n"
    )
    (tmp_path / "log").mkdir()
    return path


class Admin:
    """``sac-admin`` on the run's store, its outputs kept for the scan."""

    def __init__(self, address: str, cwd: Path) -> None:
        self.address = address
        self.cwd = cwd
        self.outputs: list[tuple[str, bytes]] = []

    async def __call__(self, *args: str, stdin: str = "", status: int = 0) -> str:
        command = [str(VENV_BIN / "sac-admin"), "--store", self.address, *args]
        done = await deferToThread(
            subprocess.run,
            command,
            input=stdin.encode(),
            capture_output=True,
            cwd=self.cwd,
            env={"PATH": "/usr/bin:/bin", **ENV},
            timeout=60,
        )
        self.outputs.append((" ".join(args), done.stdout + b"\n" + done.stderr))
        assert done.returncode == status, (args, done.stdout, done.stderr)
        return done.stdout.decode()


def csv_rows(rows: list[tuple[str, str, str]], delimiter: str = ",") -> bytes:
    lines = [delimiter.join(("ldn", "client", "ek", "ak"))]
    lines += [delimiter.join((ldn, str(SAP), ek, ak)) for ldn, ek, ak in rows]
    return ("\n".join(lines) + "\n").encode()


def bad_key_rows(ldn: str, key: bytes) -> list[tuple[str, str, str]]:
    """Key CSV rows refused for their keys, each made from the real ``key``: an error that
    repeated its input would repeat (most of) the key."""
    h = key.hex()
    return [
        (ldn, h[:30], ""),  # 15 bytes
        (ldn, h + "00", ""),  # 17 bytes
        (ldn, h[:31] + "g", ""),  # not hex
        (ldn, h, h[2:]),  # a good EK, an AK a byte short
        (h, ldn, ""),  # the columns swapped: the key where the LDN goes
    ]


def spooled_records(held: dict[str, bytes], folder: Path) -> int:
    """The records in a copy of the spool's files (its database and write-ahead log)."""
    folder.mkdir()
    for name, data in held.items():
        (folder / name).write_bytes(data)
    db = sqlite3.connect(folder / "spool.db")
    try:
        count: int = db.execute("SELECT count(*) FROM record").fetchone()[0]
        return count
    finally:
        db.close()


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_no_key_in_any_output_after_a_full_run(backend: Backend, tmp_path: Path) -> None:  # noqa: F811
    address = backend.dsn if backend.kind == "postgresql" else f"sqlite:{backend.path}"
    admin = Admin(address, tmp_path)
    # users and the provisioning system's API token, before the SAC starts
    await admin("add-user", "ada", "--role", "admin", stdin=PASSWORD + "\n")
    await admin("add-user", "otto", "--role", "operator", stdin=PASSWORD + "\n")
    token = (await admin("create-token", "otto", "provisioning")).strip()

    fleet = make_fleet(12, PROFILE, seed=9)  # meters that push
    dialled = make_fleet(2, PROFILE, seed=10, manufacturer="LSN")  # meters that listen
    ports = await dialled.listen(0)
    m = fleet.meters
    by_form, by_api, by_page_csv, by_admin_csv = m[0:3], m[3:6], m[6:8], m[8:10]
    rekeyed, keyless = m[10], m[11]
    polled, polled_wrong = dialled.meters
    wrong_push_key, wrong_poll_key = _derived("wrong push key"), _derived("wrong poll key")
    paper_ek, paper_ak = _derived("paper EK"), _derived("paper AK")  # a meter never heard
    secrets = {f"{x.ldn} key": x.key for x in [*fleet.meters, *dialled.meters]}
    secrets |= {
        "wrong push key (replaced)": wrong_push_key,
        "wrong poll key": wrong_poll_key,
        "paper EK": paper_ek,
        "paper AK": paper_ak,
        "master key": MASTER.secret,
    }
    paper = "PAP0000000000001"
    # what the keys table must hold in the end: LDN -> (EK, AK)
    expected: dict[str, tuple[bytes, bytes]] = {x.ldn: (x.key, x.key) for x in [*m[:11], polled]}
    expected |= {polled_wrong.ldn: (wrong_poll_key,) * 2, paper: (paper_ek, paper_ak)}

    config = write_config(tmp_path, address)
    sac = Twistd(VENV_BIN, config, tmp_path, ENV)
    log = LogFile(tmp_path / "log" / "sac.log", sac)
    answers: list[tuple[str, bytes]] = []
    lock: Any = None
    try:
        [ready] = await log.wait_for("SAC ready")
        web_base = f"http://127.0.0.1:{port(ready['web'])}"
        push_port = port(ready["push"])
        page = Http(web_base, answers)
        api = Http(web_base, answers, bearer=token)
        await page.sign_in("ada")
        code, _, _ = await page.post(
            "/admin/users",
            {"name": "vera", "role": "viewer", "password": PASSWORD, "password2": PASSWORD},
        )
        assert code == 303

        def fields(x: Any, **extra: str) -> dict[str, str]:
            return {
                "ldn": x.ldn,
                "pdr": x.pdr,
                "system_title": x.system_title.hex(),
                "profile": PROFILE,
                **extra,
            }

        # --- the add-meter form: bad keys first, then the good ones -----------------------
        first = by_form[0]
        h = first.key.hex()
        for ek, ak in ((h[:30], ""), (h + "00", ""), (h[:31] + "g", ""), (h, h[:-2] + "zz")):
            code, _, text = await page.post("/meters/new", fields(first, ek=ek, ak=ak))
            assert code == 400 and "16 bytes" in text, (code, text)
        spellings = (bytes.hex, lambda k: k.hex(" ").upper(), lambda k: k.hex(":"))
        for x, spelling in zip(by_form, spellings, strict=True):
            code, heads, _ = await page.post("/meters/new", fields(x, ek=spelling(x.key)))
            assert code == 303 and heads["location"].endswith("?added=1"), code
        code, _, _ = await page.post("/meters/new", fields(first, ek=h))  # again: a conflict
        assert code == 409
        code, _, _ = await page.post(
            "/meters/new",
            fields(polled, ek=polled.key.hex(), address=f"127.0.0.1:{ports[0]}"),
        )
        assert code == 303

        # --- the JSON API ---------------------------------------------------------------
        def item(x: Any, ek: Any = None, **extra: Any) -> dict[str, Any]:
            out = {
                "ldn": x.ldn,
                "pdr": x.pdr,
                "system_title": x.system_title.hex().upper(),
                "profile": PROFILE,
                **extra,
            }
            if ek is not None:
                out["ek"] = ek
            return out

        h = by_api[0].key.hex()
        for bad in (
            {"meters": [item(by_api[0], h + "00")]},
            {"meters": [item(by_api[0], h[:31] + "g", ak=h)]},
            {"meters": [item(by_api[0], [h])]},
            {"meters": [item(by_api[0], ak=h)]},  # an AK without its EK
            {"meters": [{**item(by_api[0], h), h: h}]},  # a key as a member's name
            {"meters": [{**item(by_api[0], h), "ldn": h}]},  # a key where the LDN goes
        ):
            code, answer = await api.json("POST", "/api/v1/meters", bad)
            assert code == 422, answer
        code, _, _ = await api.request(
            "POST", "/api/v1/meters", body=b'{"meters": [{"ek": "' + h.encode()
        )
        assert code == 400
        good = [item(x, x.key.hex()) for x in by_api]
        good.append(
            {
                "ldn": paper,
                "system_title": "5041500000000001",
                "profile": PROFILE,
                "ek": paper_ek.hex(),
                "ak": paper_ak.hex(),
            }
        )
        good.append(item(rekeyed, wrong_push_key.hex()))
        good.append(item(polled_wrong, wrong_poll_key.hex(), address=f"127.0.0.1:{ports[1]}"))
        good += [item(x) for x in [*by_page_csv, *by_admin_csv, keyless]]  # keys come later
        code, answer = await api.json("POST", "/api/v1/meters", {"meters": good})
        assert code == 201, answer
        code, answer = await api.json("POST", "/api/v1/meters", {"meters": good[:3]})
        assert code == 422, answer  # conflicts: every item refused, keys and all
        code, answer = await api.json("PATCH", f"/api/v1/meters/{by_api[0].ldn}", {"ek": h[:30]})
        assert code == 422, answer
        code, answer = await api.json(
            "PATCH", "/api/v1/meters", {"meters": [{"ldn": "NOSUCHMETER00001", "ek": h}]}
        )
        assert code == 422, answer

        # --- key CSV on the import page -------------------------------------------------
        async def upload(content: bytes, name: str) -> tuple[int, str]:
            code, _, text = await page.post(
                "/meters/import",
                {"step": "preview", "filename": name},
                files={"file": (name, "text/csv", io.BytesIO(content))},
            )
            return code, text

        x = by_page_csv[0]
        code, text = await upload(csv_rows(bad_key_rows(x.ldn, x.key)), "bad.csv")
        assert code == 422 and "5 of 5 lines cannot be imported" in text, text
        unknown = csv_rows([("NOSUCHMETER00002", x.key.hex().upper(), "")])
        code, text = await upload(unknown, "unknown.csv")
        assert code == 200, text
        code, _, text = await page.post(
            "/meters/import",
            {"step": "confirm", "upload": re.search(r'name="upload" value="([^"]+)"', text)[1]},
        )
        assert code == 409 and "refused 1 of 1" in text, text
        good_csv = csv_rows([(y.ldn, y.key.hex().upper(), "") for y in by_page_csv])
        code, text = await upload(good_csv, "keys.csv")
        assert code == 200 and "(hidden)" in text, text
        upload_id = re.search(r'name="upload" value="([^"]+)"', text)[1]
        code, _, text = await page.post("/meters/import", {"step": "confirm", "upload": upload_id})
        assert code == 200 and "2 keys imported" in text, text

        # --- key CSV with sac-admin, while the SAC runs ---------------------------------
        x = by_admin_csv[0]
        (tmp_path / "bad-keys.csv").write_bytes(csv_rows(bad_key_rows(x.ldn, x.key), ";"))
        await admin("import-keys", str(tmp_path / "bad-keys.csv"), status=1)
        rows = [(y.ldn, y.key.hex(), "") for y in by_admin_csv]
        (tmp_path / "keys.csv").write_bytes(csv_rows(rows, ";"))
        await admin("import-keys", str(tmp_path / "keys.csv"))
        await admin("import-keys", str(tmp_path / "keys.csv"), status=1)  # keys already

        # --- pushes: good keys, a wrong key, no key -------------------------------------
        pushers = [*by_form, *by_api, *by_page_csv, *by_admin_csv, rekeyed, keyless]
        await gatherResults([Deferred.fromCoroutine(push_once(push_port, y)) for y in pushers])
        await log.wait_for("push session from 127.0.0.1", len(pushers))
        outcomes = {e["ldn"]: e["outcome"] for e in log.matching("push session from")}
        assert outcomes[rekeyed.ldn] == "bad-tag" and outcomes[keyless.ldn] == "no-key"
        assert {outcomes[y.ldn] for y in pushers[:-2]} == {"read"}, outcomes
        # the right key, by the API; the next push authenticates
        code, answer = await api.json(
            "PATCH", f"/api/v1/meters/{rekeyed.ldn}", {"ek": rekeyed.key.hex()}
        )
        assert code == 200 and answer["keys"] == {"management": "set"}, answer
        await push_once(push_port, rekeyed)

        # --- a valve command, run at the meter's next push ------------------------------
        target = by_form[0]
        code, heads, _ = await page.post(
            f"/meters/{target.ldn}/valve", {"action": "close", "confirm": target.ldn}
        )
        assert code == 303, heads
        command_id = int(re.search(r"queued=(\d+)", heads["location"])[1])
        await push_once(push_port, target)
        [done] = await log.wait_for(f"meter {target.ldn}: command {command_id} valve-close")
        assert "done" in done["message"], done

        # --- polls: one with the meter's key, one with a wrong key ----------------------
        await log.wait_for(f"poll session of {polled.ldn}: done")
        await log.wait_for(f"poll session of {polled_wrong.ldn}: failed")

        # --- the store locked: pushes go to the spool, then are replayed ----------------
        spooled = by_api
        lock = backend.lock()
        await gatherResults([Deferred.fromCoroutine(push_once(push_port, y)) for y in spooled])
        await log.wait_for("push from 127.0.0.1 spooled", len(spooled))
        held = {p.name: p.read_bytes() for p in (tmp_path / "spool").iterdir() if p.is_file()}
        assert spooled_records(held, tmp_path / "held") >= len(spooled), held.keys()
        lock()
        lock = None
        await log.wait_for("spooled pushes replayed")

        # --- SOAP, the JSON API's reads, every page -------------------------------------
        now = dt.datetime.now(dt.UTC)
        span = {
            "start": (now - dt.timedelta(days=30)).isoformat(),
            "end": (now + dt.timedelta(days=1)).isoformat(),
        }
        basic = base64.b64encode(f"vera:{PASSWORD}".encode()).decode()
        soap_headers = {"Content-Type": "text/xml; charset=utf-8"}
        calls = [
            ("ListMeters", {}),
            ("GetMeter", {"ldn": target.ldn}),
            ("GetReadings", {"ldn": target.ldn, **span}),
            ("ExportIndexReadings", span),
            ("GetEvents", span),
            ("GetValveState", {"ldn": target.ldn}),
            ("GetCommandStatus", {"id": str(command_id)}),
            # faults: an unknown meter, a range the wrong way round
            ("GetMeter", {"ldn": "NOSUCHMETER00003"}),
            ("GetReadings", {"ldn": target.ldn, "start": span["end"], "end": span["start"]}),
        ]
        viewer = Http(web_base, answers)
        for operation, args in calls:
            code, _, text = await viewer.request(
                "POST",
                "/soap",
                body=soap(operation, **args),
                headers={
                    **soap_headers,
                    "SOAPAction": operation,
                    "Authorization": f"Basic {basic}",
                },
            )
            assert code == 200 or (code == 500 and ":Client." in text), text
        code, _, requested = await api.request(
            "POST",
            "/soap",
            body=soap("RequestValve", ldn=by_form[1].ldn, action="close"),
            headers={**soap_headers, "SOAPAction": "RequestValve"},
        )
        assert code == 200 and "pending" in requested, requested
        ldns = [y.ldn for y in [*m, *dialled.meters]] + [paper]
        code, listed = await api.json("GET", "/api/v1/meters?limit=1000")
        assert code == 200 and listed["total"] == len(ldns)
        for ldn in ldns:
            code, one = await api.json("GET", f"/api/v1/meters/{ldn}")
            assert code == 200 and set(one["keys"].values()) <= {"set", "missing"}
        commands = [command_id, int(re.search(r"<(?:\w+:)?id>(\d+)<", requested)[1])]
        # the commands through the API too: one queued there, listed, each read
        queue = {"kind": "set-setting", "params": {"setting": "push_times", "value": "05:00"}}
        code, queued = await api.json("POST", f"/api/v1/meters/{by_form[1].ldn}/commands", queue)
        assert code == 201, queued
        for path in (
            "/api/v1/commands",
            f"/api/v1/meters/{by_form[1].ldn}/commands?state=pending,sent",
            *(f"/api/v1/commands/{c}" for c in [*commands, queued["id"]]),
        ):
            code, _ = await api.json("GET", path)
            assert code == 200, path
        crawled = await crawl(page, ldns, commands)
        assert crawled >= 2 * len(ldns)

        code = await sac.stop()
    finally:
        if lock is not None:
            lock()
        sac.kill()
        await dialled.stop()
    assert code == -signal.SIGTERM, sac.output
    events = log.events()
    assert any(e["message"].startswith("SAC stopped cleanly") for e in events)

    # --- the keys at rest: ciphertext, which opens with the master key back to each key ---
    rows = backend.raw(
        "SELECT m.ldn, k.client_sap, k.role, k.wrapped FROM meter_keys k"
        " JOIN meters m ON m.id = k.meter_id ORDER BY m.ldn, k.role"
    )
    stored = {(ldn, role): bytes(blob) for ldn, sap, role, blob in rows if sap == SAP}
    assert len(rows) == len(stored) == 2 * len(expected)
    for ldn, (ek, ak) in expected.items():
        for role, key in (("ek", ek), ("ak", ak)):
            blob = stored[(ldn, role)]
            assert key not in blob and key.hex().encode() not in blob.lower()
            assert wrapped_by(blob) == MASTER.id_hex
            assert MASTER.unwrap(blob, key_place(ldn, SAP, role)) == key, (ldn, role)

    # --- the scan ---------------------------------------------------------------------------
    scan = Scan(secrets)
    log_files = sorted((tmp_path / "log").iterdir())
    lines = 0
    for path in log_files:
        data = path.read_bytes()
        lines += data.count(b"\n")
        scan("log file", path.name, data)
    scan("twistd stdout", "", "".join(sac.lines).encode())
    scan("twistd stderr", "", "".join(sac.errors).encode())
    lines += len(sac.lines) + len(sac.errors)
    # the lines that say what went wrong: warnings and errors, with their exceptions' text
    warned = [e for e in events if e["level"] in ("warn", "error", "critical")]
    for where, data in answers:
        scan("HTTP answer", where, data)
    for where, data in admin.outputs:
        scan("sac-admin output", where, data)
    assert held, "nothing on the spool while the store was locked"
    for name, data in held.items():
        scan("spool file (held)", name, data)
    for path in sorted((tmp_path / "spool").iterdir()):
        scan("spool file (end)", path.name, path.read_bytes())
    scan("configuration", config.name, config.read_bytes())
    if backend.kind == "postgresql":
        schema = re.search(r"search_path=(\w+)", backend.dsn)[1]
        dump = await deferToThread(
            subprocess.run,
            ["pg_dump", "--no-owner", "-n", schema, "-d", backend.postgres.dsn],
            capture_output=True,
            check=True,
            timeout=120,
        )
        scan("database dump", f"pg_dump -n {schema}", dump.stdout)
        assert b"COPY " in dump.stdout and b"meter_keys" in dump.stdout
    else:
        for path in sorted(backend.path.parent.glob(backend.path.name + "*")):
            scan("database file", path.name, path.read_bytes())
        with sqlite3.connect(backend.path) as db:
            text = "\n".join(db.iterdump())
        scan("database dump", "iterdump", text.encode())
    report = (
        f"{backend.kind}: {len(secrets)} secrets x {scan.forms} forms;"
        f" {lines} log lines ({len(warned)} warnings or errors), "
        + ", ".join(f"{n} {k} ({scan.sizes[k]:,} B)" for k, n in scan.sources.items())
    )
    print(report)
    assert not scan.hits, "\n".join([report, *scan.hits[:50]])
    reasons = {e.get("problem") or e.get("e") for e in warned}
    assert {"meter " + rekeyed.ldn + ": the push does not authenticate"} <= reasons, reasons
    assert any("deciphering" in str(r) for r in reasons), reasons  # the poll, wrong key
    assert len(answers) > 100


async def crawl(page: Http, ldns: list[str], commands: list[int]) -> int:
    """Every GET route of the router, as the admin signed in on ``page``: the paths for
    each rule, and a rule with no paths here fails (a new page is scanned too)."""
    meters = [f"/meters/{quote(ldn)}" for ldn in ldns]
    paths: dict[str, list[str]] = {
        "/": ["/"],
        "/login": ["/login"],
        "/health": ["/health"],
        "/metrics": ["/metrics"],
        "/static/": [],  # lists nothing: a 404 (tests/web/test_edges.py)
        "/static/<path:__rest__>": [f"/static/{p.name}" for p in sorted(STATIC.iterdir())],
        "/meters": ["/meters?size=100"]
        + [f"/meters?size=100&sort={s}&dir=desc" for s in SORTS]
        + ["/meters?q=SIM", "/meters?alarms=1", "/meters?unseen=1", "/meters?valve=0"],
        "/meters/<string(length=16):ldn>": meters
        + [f"{meters[0]}?range={r}" for r in RANGES]
        + [f"{meters[0]}?added=1&queued={commands[0]}"],
        "/meters/<string(length=16):ldn>/valve": [
            f"{p}/valve?action={a}" for p in meters[:3] for a in ("close", "enable-opening")
        ],
        "/meters/<string(length=16):ldn>/settings": [f"{p}/settings" for p in meters[:3]],
        "/commands/<int:command_id>.json": [f"/commands/{c}.json" for c in commands],
        "/status": ["/status"],
        "/meters/import/sample.csv": ["/meters/import/sample.csv"],
        "/meters/new": ["/meters/new"],
        "/meters/import": ["/meters/import"],
        "/admin/users": ["/admin/users"],
        "/admin/audit": ["/admin/audit", "/admin/audit?before=1000000"],
        "/admin/system": ["/admin/system"],
        "/admin/tokens": ["/admin/tokens"],
        "/api/v1/openapi.json": ["/api/v1/openapi.json"],
        "/api/v1/meters": [],  # with a token: read above
        "/api/v1/meters/<ldn>": [],
        "/api/v1/meters/<ldn>/events": [],
        "/api/v1/meters/<ldn>/connections": [],
        "/api/v1/meters/<ldn>/readings": [],
        "/api/v1/meters/<ldn>/daily": [],
        "/api/v1/meters/<ldn>/settings": [],
        "/api/v1/exports/month-start": [],
        "/api/v1/alarms": [],
        "/api/v1/jobs": [],
        "/api/v1/jobs/<int:job_id>": [],
        "/jobs": ["/jobs"],
        "/jobs/new": ["/jobs/new", "/jobs/new?valve=0&alarms=1"],
        "/jobs/<int:job_id>": [],
        "/jobs/<int:job_id>.json": [],
        "/api/v1/commands": [],
        "/api/v1/meters/<ldn>/commands": [],
        "/api/v1/commands/<int:command_id>": [],
        "/alarms": ["/alarms", "/alarms?category=tamper", f"/alarms?ldn={quote(ldns[0])}"],
        "/soap": ["/soap?wsdl"],
    }
    gets = {
        r.rule
        for r in route_rules()
        if "GET" in (r.methods or {"GET"}) and r.rule != "/soap/<path:__rest__>"
    }
    assert gets == set(paths), f"GET routes not crawled: {gets - set(paths)}"
    fetched = 0
    for path in (p for group in paths.values() for p in group):
        code, _, text = await page.get(path)
        assert code in (200, 303), (path, code, text[:300])
        fetched += 1
    return fetched
