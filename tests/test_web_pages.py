"""The web page's server side, without a browser: where each caller is sent, what each role is shown, the security
headers, and that the assets are local and never put data into the page as HTML."""

from __future__ import annotations

import re

import httpx
import pytest
from api_helpers import start_server, stop_server

from vigil.server.web import CONTENT_SECURITY_POLICY, STATIC_DIR, TEMPLATE_DIR

PAGES = ("/live", "/alerts", "/watchlist", "/system")


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("pages"))
    yield server
    stop_server(server)


def nav_links(page: str) -> list[str]:
    nav = re.search(r"<nav[^>]*>(.*?)</nav>", page, re.S)
    assert nav is not None
    return re.findall(r'href="([^"]+)"', nav.group(1))


@pytest.mark.parametrize(
    "path, location",
    [
        ("/", "/login"),
        ("/alerts", "/login?next=/alerts"),
        ("/system", "/login?next=/system"),
        ("/live", "/login?next=/live"),
    ],
)
def test_an_anonymous_browser_is_sent_to_the_login_form(api, path, location):
    answer = api.client("anonymous").get(path)
    assert answer.status_code == 303 and answer.headers["location"] == location


@pytest.mark.parametrize(
    "who, links, forbidden",
    [
        ("viewer", ["/live", "/alerts", "/watchlist"], ["/system"]),
        ("operator", ["/live", "/alerts", "/watchlist"], ["/system"]),
        ("admin", ["/live", "/alerts", "/watchlist", "/system"], []),
    ],
)
def test_each_role_is_shown_its_pages_and_refused_the_others(api, who, links, forbidden):
    client = api.client(who)
    assert client.get("/").headers["location"] == "/alerts"
    page = client.get("/alerts")
    assert page.status_code == 200 and nav_links(page.text) == links
    assert f'id="current-user">{who}<' in page.text and f'id="current-role">{who}<' in page.text
    csrf = re.search(r'name="vigil-csrf" content="([^"]+)"', page.text)
    assert csrf is not None and csrf.group(1) == client.headers["X-CSRF-Token"]  # the session's own token
    for path in forbidden:
        refused = client.get(path)
        assert refused.status_code == 403 and f"Your role (<strong>{who}</strong>)" in refused.text


@pytest.mark.parametrize("wanted, location", [("/live", "/live"), ("//evil.example", "/"), ("https://x.example", "/")])
def test_login_sends_a_logged_in_browser_back_to_our_own_pages_only(api, wanted, location):
    answer = api.client("operator").get("/login", params={"next": wanted})
    assert answer.status_code == 303 and answer.headers["location"] == location


@pytest.mark.parametrize("path", ["/login", "/alerts", "/static/alerts.js", "/api/v1/events", "/api/v1/health"])
def test_strict_content_security_policy_everywhere_but_the_api_docs(api, path):
    headers = api.client("operator").get(path).headers
    assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY and "script-src 'self';" in CONTENT_SECURITY_POLICY
    assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY"
    assert "content-security-policy" not in api.client("anonymous").get("/api/docs").headers  # Swagger's inline JS


def test_the_event_stream_still_streams_through_the_header_middleware(api):
    with api.client("viewer").stream("GET", "/api/v1/stream") as answer:
        assert answer.headers["content-type"].startswith("text/event-stream")
        assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        first = next(answer.iter_lines())
        assert first.startswith("retry:")


def test_pages_are_not_cached_and_assets_are_revalidated(api):
    client = api.client("operator")
    assert client.get("/alerts").headers["cache-control"] == "no-store"  # it carries the CSRF token
    asset = client.get("/static/common.js")
    assert asset.headers["cache-control"] == "no-cache" and asset.headers["etag"]
    again = client.get("/static/common.js", headers={"If-None-Match": asset.headers["etag"]})
    assert again.status_code == 304


def test_no_inline_script_or_style_in_any_template():
    for template in TEMPLATE_DIR.glob("*.html"):
        text = template.read_text(encoding="utf-8")
        assert not re.search(r"<script(?![^>]*\ssrc=)", text), f"{template.name}: inline script"
        assert "<style" not in text and " style=" not in text, f"{template.name}: inline style"
        assert not re.search(r"\son[a-z]+=", text), f"{template.name}: inline event handler"


def test_assets_are_local_and_put_data_into_the_page_as_text_only():
    for asset in STATIC_DIR.iterdir():
        text = asset.read_text(encoding="utf-8")
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text.replace("http://www.w3.org/2000/svg", "")), (
            f"{asset.name}: refers to another host"
        )
        if asset.suffix == ".js":
            for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
                assert sink not in text, f"{asset.name}: {sink} would parse data as HTML or code"


def test_every_page_script_exists_and_is_small():
    total = sum(path.stat().st_size for path in STATIC_DIR.iterdir())
    for name in ("login", "live", "alerts", "watchlist", "system"):
        assert (STATIC_DIR / f"{name}.js").is_file()
    assert total < 300_000  # the page's whole asset budget (README: the first load's measured bytes)


def test_a_session_cookie_reaches_the_pages_a_bearer_token_is_not_a_browser(api):
    answer = httpx.get(f"{api.url}/alerts", headers={"Authorization": f"Bearer {api.token}"})
    assert answer.status_code == 200  # a token's caller may fetch the page; it carries no CSRF token then
    assert 'name="vigil-csrf" content=""' in answer.text
