"""The dashboard's files as the API serves them (no browser: see test_dashboard.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from config import Settings
from crmtracker import compose
from crmtracker.compose import api_app as create_app
from testkit.api import asgi_client

ASSETS = Path(__file__).resolve().parents[2] / "api" / "static" / "dashboard"


@pytest.fixture
async def client(sqlite_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(database_url=sqlite_url, data_dir=tmp_path, auth_secret="s" * 40)
    app = create_app(settings)
    async with asgi_client(app) as c:
        yield c


async def test_page_is_served_with_a_strict_policy(client: httpx.AsyncClient) -> None:
    r = await client.get("/dashboard")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert '<meta name="crm-timezone" content="Asia/Shanghai">' in r.text
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert r.headers["referrer-policy"] == "no-referrer"
    # no page is reachable without going through the page's own sign-in: no token needed
    assert (await client.get("/dashboard/")).status_code == 308


@pytest.mark.parametrize(
    ("name", "media"),
    [
        ("app.js", "text/javascript"),
        ("api.js", "text/javascript"),
        ("format.js", "text/javascript"),
        ("i18n.js", "text/javascript"),
        ("style.css", "text/css"),
    ],
)
async def test_assets(client: httpx.AsyncClient, name: str, media: str) -> None:
    r = await client.get(f"/dashboard/{name}")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith(media)
    assert r.content == (ASSETS / name).read_bytes()


@pytest.mark.parametrize(
    "path", ["/dashboard/index.htm", "/dashboard/..%2Fauth.py", "/dashboard/%2e%2e/deps.py"]
)
async def test_nothing_else_is_served(client: httpx.AsyncClient, path: str) -> None:
    assert (await client.get(path)).status_code == 404


def test_no_outside_links_and_no_html_injection() -> None:
    """Offline screens: no CDN; data goes in with textContent, never innerHTML."""
    for f in ASSETS.iterdir():
        text = f.read_text(encoding="utf-8")
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in text
        assert "innerHTML" not in text and "insertAdjacentHTML" not in text
        assert "document.write" not in text and "eval(" not in text


def test_up_banner_prints_dashboard_links(tmp_path: Path) -> None:
    from api.auth import decode_token, mint_token
    from crmtracker.up import _banner

    settings = Settings(data_dir=tmp_path, auth_secret="s" * 40, api_port=8123)
    secret = compose.signing_secret(settings)
    admin = mint_token(secret, "admin")
    supervisor = mint_token(secret, "supervisor", branches=["b01"])
    lines = _banner(settings, admin, True, supervisor).splitlines()
    assert f"  admin token    {admin}" in lines  # the existing lines stay
    assert f"  dashboard      http://127.0.0.1:8123/dashboard#token={admin}" in lines
    (link,) = [line for line in lines if line.startswith("  b01 supervisor ")]
    token = link.split("#token=", 1)[1]
    assert decode_token(secret, token).branches == {"b01"}
    # without the demo: the admin link only
    quiet = _banner(settings, admin, False)
    assert "/dashboard#token=" in quiet and "supervisor" not in quiet
