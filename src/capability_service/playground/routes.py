"""`GET /playground` and its two assets, with a strict Content Security Policy."""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

router = APIRouter(include_in_schema=False)

# Served names and their types; nothing else under /playground/ exists.
ASSETS: dict[str, str] = {
    "index.html": "text/html; charset=utf-8",
    "playground.js": "text/javascript; charset=utf-8",
    "playground.css": "text/css; charset=utf-8",
}

# Only this page's own script and styles run; result images may come from the storage's own origin
# (S3, a CDN), so images are the one thing loaded from elsewhere. No inline script, no framing.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob: http: https:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Small files: always revalidated, so a new version of the service is never paired with an old page.
    "Cache-Control": "no-cache",
}


@cache
def asset(name: str) -> bytes:
    """The bytes of a packaged asset (read once)."""
    return resources.files("capability_service.playground").joinpath("static", name).read_bytes()


def _answer(name: str) -> Response:
    return Response(asset(name), media_type=ASSETS[name], headers=HEADERS)


@router.get("/playground")
async def playground_page() -> Response:
    return _answer("index.html")


@router.get("/playground/{name}")
async def playground_asset(name: str) -> Response:
    if name not in ASSETS or name == "index.html":
        raise HTTPException(404, detail="no such file")
    return _answer(name)
