"""`/playground`: served in development, off in production unless PLAYGROUND_ENABLED=true; nothing external."""

from __future__ import annotations

import re
from collections.abc import Callable
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest

from capability_service.playground.routes import ASSETS, asset


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.inline_scripts = 0
        self.inline_styles = 0
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.links += [value for name, value in attrs if name in ("src", "href", "action") and value is not None]
        self.inline_styles += int("style" in values) + int(tag == "style")
        self._in_script = tag == "script" and "src" not in values
        if any(name.startswith("on") for name in values):
            self.inline_scripts += 1

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts += 1

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False


async def test_the_page_and_its_assets_are_served_with_a_strict_policy(client: httpx.AsyncClient) -> None:
    page = await client.get("/playground")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "<title>Playground · Capability Service</title>" in page.text
    for name, media_type in ASSETS.items():
        if name == "index.html":
            continue
        response = await client.get(f"/playground/{name}")
        assert response.status_code == 200
        assert response.headers["content-type"] == media_type
        assert response.content == asset(name)
    # The page needs no key to load; every API request it makes sends one.
    assert "X-API-Key" in (await client.get("/playground/playground.js")).text


@pytest.mark.parametrize("path", ["/playground/secret.py", "/playground/..%2Froutes.py", "/playground/index.html"])
async def test_nothing_else_is_served(client: httpx.AsyncClient, path: str) -> None:
    assert (await client.get(path)).status_code == 404


def test_everything_the_page_loads_ships_in_the_package() -> None:
    parser = _Links()
    parser.feed(asset("index.html").decode())
    assert parser.links
    for link in parser.links:
        # Relative to the page (so it works under any path prefix), a fragment, or an empty data: icon.
        assert re.fullmatch(r"playground/playground\.(js|css)|#[\w-]+|data:,", link), link
    # The Content Security Policy allows no inline code or style.
    assert parser.inline_scripts == 0
    assert parser.inline_styles == 0
    css = asset("playground.css").decode()
    assert "@import" not in css and "url(" not in css
    script = asset("playground.js").decode()
    assert not re.search(r"https?://", script)
    assert "EventSource" not in script.replace("EventSource cannot", "")
    # The key never goes into a URL: it is read from session storage into the X-API-Key header only.
    assert "localStorage" not in script
    assert not re.search(r"[?&](api_?key|key)=", script, re.IGNORECASE)


@pytest.mark.parametrize(
    ("settings", "served"),
    [
        ({}, True),
        ({"playground_enabled": False}, False),
        ({"environment": "production"}, False),
        ({"environment": "production", "playground_enabled": True}, True),
    ],
)
async def test_on_in_development_and_off_in_production_unless_enabled(
    make_client: Callable[..., Any], settings: dict[str, Any], served: bool
) -> None:
    client = await make_client(**settings)
    response = await client.get("/playground")
    assert response.status_code == (200 if served else 404)
    assert (await client.get("/playground/playground.js")).status_code == (200 if served else 404)
