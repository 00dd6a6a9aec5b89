"""The supervisors' dashboard: a static page (plain ES modules, no build) served by the API.

The page signs in with a bearer token (pasted, or carried in the URL fragment, which never
reaches the server) and reads the same ``/v1`` endpoints as any other client, so it shows
exactly what the token's scope allows.
"""

from __future__ import annotations

from html import escape
from importlib.resources import files
from pathlib import PurePosixPath

from fastapi import APIRouter, HTTPException, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

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


@router.get("/dashboard/plotly.min.js")
async def dashboard_charts() -> Response:
    """The chart library, from the installed package that ships it."""
    vendored = _vendored("plotly.min.js")
    if vendored is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "not found")
    headers = {**_HEADERS, "Cache-Control": "public, max-age=86400"}
    return Response(vendored, media_type=_TYPES[".js"], headers=headers)


class _Assets(StaticFiles):
    """The page's scripts, style sheet and images, from its folder (Starlette's static files:
    no listing per request, ETag and If-None-Match), with the page's headers; only those
    kinds of file are reachable."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        media = _TYPES.get(PurePosixPath(path).suffix)
        if media is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "not found")
        try:
            response = await super().get_response(path, scope)
        except StarletteHTTPException as exc:
            raise HTTPException(exc.status_code, "not found") from None
        response.headers.update(_HEADERS)
        if response.status_code == status.HTTP_200_OK:
            response.headers["content-type"] = media
        return response


router.mount("/dashboard", _Assets(directory=str(_ASSETS)), name="dashboard-assets")
