"""Small holes found from outside (issue 18), each through the real application and store:
/static/ lists nothing; a key typed into allowed_ips is never repeated; an LDN is letters,
digits, '-', '_' and '.' whichever way a meter comes in; cursors with numbers no column
holds are bad requests, not crashes; the WSDL names the configured public URL."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
import pytest_twisted
from lxml import etree

from sac.store import MeterQuery, NewMeter
from sac.store.exports import _fingerprint, encode_cursor
from sac.store.keycsv import parse_key_csv
from sac.web.common import WebSettings
from tests.store.conftest import Backend
from tests.web.conftest import make_site
from tests.web.test_api import EK, Api, Tokens, seed  # noqa: F401 -- fixtures too
from tests.web.test_api import site as site  # a fixture
from tests.web.test_api import tokens as tokens  # a fixture

KEY = "00112233445566778899AABBCCDDEEFF"  # a key typed into the wrong field
TITLE = "2F19000000000042"


@pytest_twisted.ensureDeferred
async def test_static_lists_no_directory(site: Any) -> None:
    browser = site.browser()
    for path in ("/static/", "/static", "/static/./", "/static//"):
        code, _, page = await browser.get(path)
        assert code in (404, 301, 302, 308), path
        assert 'href="sac.css"' not in page and "Directory listing" not in page, path
    code, _, page = await browser.get("/static/sac.css")
    assert code == 200 and page


@pytest_twisted.ensureDeferred
async def test_a_key_typed_into_allowed_ips_is_not_repeated(site: Any, tokens: Tokens) -> None:
    operator = await site.signed_in("otto")
    await operator.get("/meters/new")
    form = {
        "ldn": "FIO0000000000042",
        "system_title": TITLE,
        "profile": "fiorentini",
        "ek": EK,
        "allowed_ips": f"192.0.2.1, {KEY}",
    }
    code, _, page = await operator.post("/meters/new", form)
    assert code == 400
    assert "Entry 2 of 2 is not an IP address" in page
    assert KEY not in page and KEY.lower() not in page
    assert 'value="192.0.2.1"' in page  # the good entries stay
    api = tokens.client("otto")
    item = {"ldn": "FIO0000000000042", "system_title": TITLE, "allowed_ips": ["192.0.2.1", KEY]}
    code, _, body = await api.call("POST", "/api/v1/meters", {"meters": [item]})
    assert code == 422
    [problem] = body["error"]["items"]
    assert problem["field"] == "allowed_ips" and "Entry 2 of 2" in problem["message"]
    code, _, body = await api.call(
        "PATCH", "/api/v1/meters", {"meters": [{"ldn": "FIO0000000000042", "allowed_ips": [KEY]}]}
    )
    assert code == 422
    assert all(KEY not in text and KEY.lower() not in text for text in api.seen)
    assert await site.store.meters.count() == 0


BAD_LDNS = ["FIO/000000000001", "FIO?000000000001", "FIO 000000000001", "FIO%00000000001", "É" * 16]


@pytest_twisted.ensureDeferred
async def test_an_ldn_is_letters_digits_and_three_marks_whichever_way_it_comes(
    site: Any, tokens: Tokens
) -> None:
    operator = await site.signed_in("otto")
    api = tokens.client("otto")
    await operator.get("/meters/new")
    for bad in BAD_LDNS:
        form = {"ldn": bad, "system_title": TITLE, "profile": "fiorentini", "ek": EK}
        code, _, page = await operator.post("/meters/new", form)
        assert code == 400 and 'id="e-ldn"' in page, bad
        assert "each a letter, a digit" in page
        item = {"ldn": bad, "system_title": TITLE}
        code, _, body = await api.call("POST", "/api/v1/meters", {"meters": [{}, item]})
        assert code == 422
        assert (1, "ldn") in [(p["index"], p["field"]) for p in body["error"]["items"]], bad
        csv = f"ldn,ek\nFIO0000000000001,{EK}\n{bad},{EK}\n"
        _, errors = parse_key_csv(csv)
        assert [e.line for e in errors] == [3] and "each a letter, a digit" in errors[0].reason
        with pytest.raises(ValueError, match="each a letter, a digit"):
            await site.store.meters.add(NewMeter(bad))
    assert await site.store.meters.count() == 0
    good = "Ab-_.0123456789z"
    code, _, body = await api.call("POST", "/api/v1/meters", {"meters": [{"ldn": good}]})
    assert code == 201, body
    code, _, page = await operator.get(f"/meters/{good}")
    assert code == 200 and good in page
    # a key in the LDN column of a CSV is not repeated either
    _, errors = parse_key_csv(f"ldn,ek\n{KEY},{EK}\n")
    assert KEY not in str(errors[0])


@pytest_twisted.ensureDeferred
async def test_cursors_with_numbers_no_column_holds_are_refused(site: Any, tokens: Tokens) -> None:
    await seed(site, 3, history=(0, 1, 2))
    for cursor in (
        ["index", 2**63, "API0000000000001"],
        ["index", -(2**63) - 1, "API0000000000001"],
        ["index", 10**30, "API0000000000001"],
        ["battery", 2**64, "API0000000000001"],
        ["diagnostic", 2**70, "API0000000000001"],
    ):
        text = json.dumps(cursor)
        with pytest.raises(ValueError, match="not a cursor"):
            await site.store.meters.page(after=text, limit=10, query=MeterQuery(sort=cursor[0]))
        viewer = await site.signed_in("vera")
        code, _, _ = await viewer.get(f"/meters?sort={cursor[0]}&after={text}")
        assert code == 400, cursor
    for text in ('["index", Infinity, "A"]', '["index", NaN, "A"]'):
        with pytest.raises(ValueError, match="not a cursor"):
            await site.store.meters.page(after=text, limit=10, query=MeterQuery(sort="index"))
    api = tokens.client("vera")
    code, _, _ = await api.call("GET", f"/api/v1/meters?after={json.dumps(cursor)}")
    assert code == 200  # the API pages by LDN: any text is a place in that order
    # an export cursor is bound to its query by a fingerprint anyone can compute: its
    # numbers are checked too
    start, end = dt.datetime(2020, 1, 1, tzinfo=dt.UTC), dt.datetime(2040, 1, 1, tzinfo=dt.UTC)
    fingerprint = _fingerprint("r", start.isoformat(), end.isoformat(), None, None, None)
    for position in ((2**63, start.isoformat(), 1), (1, start.isoformat(), 2**64)):
        cursor_text = encode_cursor("r", fingerprint, *position)
        with pytest.raises(ValueError, match="not a cursor"):
            await site.store.exports.readings(start, end, cursor=cursor_text)
    fingerprint = _fingerprint("e", start.isoformat(), end.isoformat(), None)
    with pytest.raises(ValueError, match="not a cursor"):
        await site.store.exports.events(
            start, end, cursor=encode_cursor("e", fingerprint, start.isoformat(), 2**63)
        )


@pytest.mark.parametrize("public", ["", "https://sac.example.com/erp"])
@pytest_twisted.ensureDeferred
async def test_the_wsdl_names_the_public_url(sqlite: Backend, public: str) -> None:
    site = await make_site(sqlite, public_url=public)
    assert isinstance(site.web.settings, WebSettings)
    browser = site.browser()
    code, _, text = await browser.request(
        "GET", "/soap?wsdl", headers={"Host": "evil.example:8443"}
    )
    assert code == 200
    root = etree.fromstring(text.encode())
    locations = [e.get("location") for e in root.iter() if e.get("location")]
    if public:
        assert locations == [f"{public}/soap"] and "evil" not in text
    else:  # today's behaviour without it: the URL the client used
        assert locations == ["http://evil.example:8443/soap"]
