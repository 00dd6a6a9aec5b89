"""The supervisors' dashboard: a static page (plain ES modules, no build) served by the API.

The page signs in with a bearer token (pasted, or carried in the URL fragment, which never
reaches the server) and reads the same ``/v1`` endpoints as any other client, so it shows
exactly what the token's scope allows.
"""

from __future__ import annotations

from html import escape
from importlib.resources import files
from typing import Any

from fastapi import APIRouter, HTTPException, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse

from api.deps import SettingsDep

router = APIRouter(tags=["dashboard"], include_in_schema=False)

_ASSETS = files("api") / "static" / "dashboard"
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Only the page's own files, from its own origin: no CDN, no inline script, no framing.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def _asset_names() -> dict[str, str]:
    return {
        p.name: _TYPES[suffix]
        for p in _ASSETS.iterdir()
        if (suffix := "." + p.name.rpartition(".")[2]) in _TYPES
    }


@router.get("/dashboard", response_class=HTMLResponse)
async def dashboard_page(settings: SettingsDep) -> Response:
    """The dashboard page; the bank's time zone is handed to it for period pickers."""
    html = (_ASSETS / "index.html").read_text(encoding="utf-8")
    html = html.replace("{{timezone}}", escape(str(settings.tz.key)))
    return HTMLResponse(html, headers=_HEADERS)


@router.get("/dashboard/")
async def dashboard_slash() -> Response:
    return RedirectResponse("/dashboard", status_code=status.HTTP_308_PERMANENT_REDIRECT)


def _vendored(name: str) -> bytes | None:
    """Chart library files served from the installed package that ships them (plotly's
    wheel carries plotly.min.js): nothing fetched from a CDN, nothing copied into the repo."""
    if name != "plotly.min.js":
        return None
    try:
        return (files("plotly") / "package_data" / "plotly.min.js").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError):
        return None


@router.get("/dashboard/{name}")
async def dashboard_asset(name: str) -> Any:
    """The page's scripts and style sheet (a fixed list: nothing else is reachable)."""
    vendored = _vendored(name)
    if vendored is not None:
        headers = {**_HEADERS, "Cache-Control": "public, max-age=86400"}
        return Response(vendored, media_type=_TYPES[".js"], headers=headers)
    media = _asset_names().get(name)
    if media is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "not found")
    body = (_ASSETS / name).read_bytes()
    return Response(body, media_type=media, headers=_HEADERS)
