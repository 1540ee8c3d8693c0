"""The admins' pages -- users, roles, passwords, the audit trail, the system page -- and what
the other roles may not do there, through Klein on both stores."""

from __future__ import annotations

import html
import re

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from sac.store import Actor, Role
from tests.web.conftest import PASSWORD, Backend, Site, make_site

NEW_PASSWORD = "a new passphrase 42"
ADMIN_PAGES = ("/admin/users", "/admin/audit", "/admin/system")


@pytest.fixture
def site(backend: Backend) -> Site:
    return pytest_twisted.blockon(Deferred.fromCoroutine(make_site(backend)))


async def roles(site: Site) -> dict[str, tuple[Role, bool]]:
    return {u.name: (u.role, u.active) for u in await site.store.users.all()}


async def audited(site: Site) -> list[tuple[str, str, str | None]]:
    return [(e.actor, e.action, e.target) for e in await site.store.audit.log(500)]


@pytest_twisted.ensureDeferred
async def test_only_admins_reach_the_admin_pages(site: Site) -> None:
    for name in ("vera", "otto"):
        browser = await site.signed_in(name)
        _, _, page = await browser.get("/meters")
        assert 'href="/admin/users"' not in page
        for path in ADMIN_PAGES:
            code, _, page = await browser.get(path)
            assert code == 403 and "Not allowed" in page, (name, path)
        for path, data in (
            ("/admin/users", {"name": "eve", "role": "admin", "password": NEW_PASSWORD}),
            ("/admin/users/change", {"name": name, "action": "role", "role": "admin"}),
        ):
            code, _, _ = await browser.post(path, {**data, "password2": NEW_PASSWORD})
            assert code == 403, (name, path)
    assert await roles(site) == {
        "ada": (Role.ADMIN, True),
        "otto": (Role.OPERATOR, True),
        "vera": (Role.VIEWER, True),
    }
    admin = await site.signed_in("ada")
    _, _, page = await admin.get("/meters")
    assert 'href="/admin/users"' in page and 'href="/admin/audit"' in page
    for path in ADMIN_PAGES:
        code, _, _ = await admin.get(path)
        assert code == 200, path
    anonymous = site.browser()
    for path in ADMIN_PAGES:
        code, heads, _ = await anonymous.get(path)
        assert code == 303 and heads["location"].startswith("/login?next=%2Fadmin"), path


@pytest_twisted.ensureDeferred
async def test_adding_a_user_checks_every_field(site: Site) -> None:
    admin = await site.signed_in("ada")
    await admin.get("/admin/users")
    for data, field, message in (
        ({"name": "", "password": NEW_PASSWORD}, "name", "Enter a user name."),
        ({"name": "x" * 65, "password": NEW_PASSWORD}, "name", "1 to 64 printable"),
        ({"name": "eve", "password": "short"}, "password", "at least 8 characters"),
        ({"name": "eve", "password": "p" * 1025}, "password", "at most 1024"),
        ({"name": "eve", "role": "root", "password": NEW_PASSWORD}, "role", "Choose viewer"),
        (
            {"name": "eve", "password": NEW_PASSWORD, "password2": "other"},
            "password2",
            "The two passwords differ.",
        ),
        ({"name": "otto", "password": NEW_PASSWORD}, "name", "exists already"),
    ):
        form = {"role": "viewer", "password2": data.get("password", ""), **data}
        code, _, page = await admin.post("/admin/users", form)
        assert code in (400, 409), data
        shown = re.search(rf'<p class="error" id="e-{field}">([^<]*)</p>', page)
        assert shown and message in html.unescape(shown.group(1)), (data, page[-2000:])
        assert NEW_PASSWORD not in page and "short" not in page.split("<main>")[1]
        assert "eve" not in await roles(site)
    assert "add user" not in [a for _, a, _ in await audited(site)]


@pytest_twisted.ensureDeferred
async def test_a_new_user_signs_in_with_the_role_given(site: Site) -> None:
    admin = await site.signed_in("ada")
    await admin.get("/admin/users")
    code, heads, _ = await admin.post(
        "/admin/users",
        {
            "name": "eve <x>",
            "role": "operator",
            "password": NEW_PASSWORD,
            "password2": NEW_PASSWORD,
        },
    )
    assert code == 303 and heads["location"] == "/admin/users?done=added&user=eve+%3Cx%3E"
    _, _, page = await admin.get(heads["location"])
    assert "<strong>eve &lt;x&gt;</strong> was added." in page
    assert (await roles(site))["eve <x>"] == (Role.OPERATOR, True)
    assert ("ada", "add user", "eve <x>") in await audited(site)
    eve = site.browser()
    code, _, _ = await eve.sign_in("eve <x>", NEW_PASSWORD)
    assert code == 303
    code, _, _ = await eve.get("/meters/new")  # an operator's page
    assert code == 200


@pytest_twisted.ensureDeferred
async def test_a_new_role_applies_at_once_and_signs_the_user_out(site: Site) -> None:
    otto = await site.signed_in("otto")
    admin = await site.signed_in("ada")
    await admin.get("/admin/users")
    code, heads, _ = await admin.post(
        "/admin/users/change", {"name": "otto", "action": "role", "role": "viewer"}
    )
    assert code == 303 and "done=role" in heads["location"]
    assert (await roles(site))["otto"] == (Role.VIEWER, True)
    code, heads, _ = await otto.get("/meters")
    assert code == 303 and heads["location"].startswith("/login")
    await otto.sign_in("otto")
    code, _, _ = await otto.get("/meters/new")
    assert code == 403  # a viewer now
    assert ("ada", "update user", "otto") in await audited(site)
    code, _, _ = await admin.post(
        "/admin/users/change", {"name": "otto", "action": "role", "role": "root"}
    )
    assert code == 400


@pytest_twisted.ensureDeferred
async def test_a_disabled_user_is_signed_out_and_cannot_sign_in(site: Site) -> None:
    vera = await site.signed_in("vera")
    admin = await site.signed_in("ada")
    await admin.get("/admin/users")
    code, _, _ = await admin.post("/admin/users/change", {"name": "vera", "action": "disabled"})
    assert code == 303
    code, _, _ = await vera.get("/meters")
    assert code == 303
    code, _, page = await site.browser().sign_in("vera")
    assert code == 403 and "Wrong user name or password." in page
    _, _, page = await admin.get("/admin/users")
    row = re.search(r'<tr class="disabled" data-user="vera">.*?</tr>', page, re.S)
    assert row and ">disabled<" in row.group(0) and ">Enable<" in row.group(0)
    code, _, _ = await admin.post("/admin/users/change", {"name": "vera", "action": "enabled"})
    assert code == 303
    code, _, _ = await site.browser().sign_in("vera")
    assert code == 303


@pytest_twisted.ensureDeferred
async def test_an_admin_keeps_their_own_access(site: Site) -> None:
    admin = await site.signed_in("ada")
    await admin.get("/admin/users")
    for data, message in (
        ({"action": "disabled"}, "You cannot disable yourself."),
        ({"action": "role", "role": "operator"}, "You cannot take away your own admin role."),
    ):
        code, _, page = await admin.post("/admin/users/change", {"name": "ada", **data})
        assert code == 409 and message in page
    assert (await roles(site))["ada"] == (Role.ADMIN, True)
    # another admin may (and the demoted admin's session ends)
    await site.store.users.add("bob", PASSWORD, Role.ADMIN)
    bob = await site.signed_in("bob")
    await bob.get("/admin/users")
    code, _, _ = await bob.post(
        "/admin/users/change", {"name": "ada", "action": "role", "role": "viewer"}
    )
    assert code == 303
    assert (await roles(site))["ada"] == (Role.VIEWER, True)
    code, _, _ = await admin.get("/admin/users")
    assert code == 303


@pytest_twisted.ensureDeferred
async def test_a_new_password_lifts_a_lock_out(site: Site) -> None:
    stranger = site.browser()
    for _ in range(5):
        await stranger.sign_in("vera", "wrong password")
    code, _, _ = await site.browser().sign_in("vera")
    assert code == 403  # locked
    admin = await site.signed_in("ada")
    _, _, page = await admin.get("/admin/users")
    assert re.search(r'data-user="vera">.*?locked until', page, re.S)
    code, _, page = await admin.post(
        "/admin/users/change",
        {"name": "vera", "action": "password", "password": NEW_PASSWORD, "password2": "typo"},
    )
    assert code == 400 and "vera: The two passwords differ." in page
    code, heads, _ = await admin.post(
        "/admin/users/change",
        {"name": "vera", "action": "password", "password": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )
    assert code == 303 and "done=password" in heads["location"]
    code, _, _ = await site.browser().sign_in("vera")
    assert code == 403  # the old password no longer works
    code, _, _ = await site.browser().sign_in("vera", NEW_PASSWORD)
    assert code == 303
    # an admin's own new password ends their session: sign in again
    code, heads, _ = await admin.post(
        "/admin/users/change",
        {"name": "ada", "action": "password", "password": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )
    assert code == 303 and heads["location"] == "/login"
    code, _, _ = await admin.get("/admin/users")
    assert code == 303


@pytest_twisted.ensureDeferred
async def test_bad_changes_are_refused_plainly(site: Site) -> None:
    admin = await site.signed_in("ada")
    await admin.get("/admin/users")
    code, _, _ = await admin.post("/admin/users/change", {"name": "nobody", "action": "disabled"})
    assert code == 404
    code, _, page = await admin.post("/admin/users/change", {"name": "vera", "action": "delete"})
    assert code == 400 and "Traceback" not in page
    code, _, page = await admin.post(
        "/admin/users/change", {"name": "vera", "action": "disabled"}, csrf=False
    )
    assert code == 403 and "Form expired" in page
    assert (await roles(site))["vera"] == (Role.VIEWER, True)


@pytest_twisted.ensureDeferred
async def test_the_audit_trail_pages_back_through_every_line(site: Site) -> None:
    for i in range(130):
        await site.store.audit.record(
            Actor("poller", "10.0.0.9"), "export", f"batch {i}", "<b>x</b>"
        )
    admin = await site.signed_in("ada")
    _, _, first = await admin.get("/admin/audit")
    targets = re.findall(r"<td>(batch \d+)</td>", first)
    assert targets[0] == "batch 129" and len(targets) <= 100
    assert "&lt;b&gt;x&lt;/b&gt;" in first and "<b>x</b>" not in first
    older = re.search(r'href="(/admin/audit\?before=\d+)" rel="next"', first)
    assert older
    _, _, second = await admin.get(older.group(1))
    more = re.findall(r"<td>(batch \d+)</td>", second)
    assert targets + more == [f"batch {i}" for i in range(129, -1, -1)]
    assert 'rel="next"' not in second  # the oldest lines: the sign-ins and nothing further


@pytest_twisted.ensureDeferred
async def test_the_system_page_shows_settings_and_profiles(site: Site) -> None:
    admin = await site.signed_in("ada")
    code, _, page = await admin.get("/admin/system")
    assert code == 200
    profiles = re.findall(r"<tr>\s*<td>([a-z0-9.-]+)</td>", page)
    assert profiles == sorted(site.web.registry.profiles) and len(profiles) >= 2
    assert "management 1" in page and "public 16" in page
    assert "8:00:00" in page and "no (plain HTTP)" in page
    assert re.search(r"<th>sac</th><td>[0-9]", page)


# --- API tokens -----------------------------------------------------------------------------


async def api_status(site: Site, secret: str) -> int:
    code, _, _ = await site.browser().request(
        "GET", "/api/v1/meters", headers={"Authorization": f"Bearer {secret}"}
    )
    return code


@pytest_twisted.ensureDeferred
async def test_an_admin_makes_a_token_sees_it_once_and_revokes_it(site: Site) -> None:
    for name in ("vera", "otto"):
        browser = await site.signed_in(name)
        _, _, page = await browser.get("/meters")
        assert 'href="/admin/tokens"' not in page
        code, _, _ = await browser.get("/admin/tokens")
        assert code == 403
        code, _, _ = await browser.post("/admin/tokens", {"user": name, "name": "mine"})
        assert code == 403
    assert await site.store.tokens.all() == []
    admin = await site.signed_in("ada")
    code, _, page = await admin.get("/admin/tokens")
    assert code == 200 and 'href="/admin/tokens"' in page and "No token yet." in page
    code, _, page = await admin.post("/admin/tokens", {"user": "otto", "name": "ERP <prod>"})
    assert code == 200
    secret = re.search(r'id="secret" class="secret" type="text" value="([^"]+)"', page)
    assert secret and secret.group(1).startswith("sac_")
    secret_text = html.unescape(secret.group(1))
    assert "Copy it now: it is shown this once." in page and "Ctrl+C" in page
    assert "ERP &lt;prod&gt;" in page and "ERP <prod>" not in page
    (token,) = await site.store.tokens.all()
    assert (token.name, token.user.name, token.revoked) == ("ERP <prod>", "otto", None)
    assert await api_status(site, secret_text) == 200
    # the list shows the token, never its secret again
    code, _, page = await admin.get("/admin/tokens")
    row = re.search(rf'<tr class="" data-token="{token.id}">.*?</tr>', page, re.S)
    assert row and ">operator<" in row.group(0) and ">Revoke</button>" in row.group(0)
    assert secret_text not in page and 'id="secret"' not in page
    code, heads, _ = await admin.post("/admin/tokens/revoke", {"id": str(token.id)})
    assert code == 303 and heads["location"] == f"/admin/tokens?revoked={token.id}"
    _, _, page = await admin.get(heads["location"])
    assert f"Token #{token.id} is revoked" in page
    row = re.search(rf'<tr class="disabled" data-token="{token.id}">.*?</tr>', page, re.S)
    assert row and "Revoke</button>" not in row.group(0)
    assert await api_status(site, secret_text) == 401
    trail = await audited(site)
    assert ("ada", "create API token", "otto") in trail
    assert ("ada", "revoke API token", f"#{token.id}") in trail


@pytest_twisted.ensureDeferred
async def test_a_bad_token_request_is_refused_plainly(site: Site) -> None:
    await site.store.users.update("vera", None, active=False)
    admin = await site.signed_in("ada")
    await admin.get("/admin/tokens")
    for data, field, message in (
        ({"user": "otto", "name": ""}, "name", "Name the token after"),
        ({"user": "otto", "name": "x" * 101}, "name", "1 to 100 printable"),
        ({"user": "nobody", "name": "erp"}, "user", "Choose an active user"),
        ({"user": "vera", "name": "erp"}, "user", "Choose an active user"),
    ):
        code, _, page = await admin.post("/admin/tokens", data)
        assert code == 400 and f'id="e-{field}"' in page and message in page, data
        assert 'id="secret"' not in page
    code, _, page = await admin.post("/admin/tokens", {"user": "otto", "name": "erp"}, csrf=False)
    assert code == 403 and "Form expired" in page
    assert await site.store.tokens.all() == []
    code, _, _ = await admin.post("/admin/tokens/revoke", {"id": "99"})
    assert code == 404
    code, _, page = await admin.post("/admin/tokens/revoke", {"id": "one"})
    assert code == 400 and "Traceback" not in page
