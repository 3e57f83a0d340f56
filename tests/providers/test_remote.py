"""What the vendors' providers share: key checks, decoding of returned images, prompts, health."""

from __future__ import annotations

import base64
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler

import pytest

from capability_service.providers.gemini import GeminiProvider
from capability_service.providers.openai import OpenAIProvider
from capability_service.providers.remote import HEALTH_MAX_BYTES, RemoteModelProvider, decode_image, prompt_text
from tests.support.data import read_image
from tests.support.servers import Route, free_port, http_server

Provider = Callable[..., RemoteModelProvider]


@pytest.mark.parametrize(("cls", "setting"), [(GeminiProvider, "AI_API_KEY"), (OpenAIProvider, "OPENAI_API_KEY")])
def test_an_empty_key_is_refused_naming_the_setting(cls: Provider, setting: str) -> None:
    with pytest.raises(ValueError, match=f"needs an API key \\({setting}\\)"):
        cls(api_base="http://127.0.0.1:9", api_key="")


def test_returned_images_are_decoded_and_their_format_read_from_the_bytes() -> None:
    photo = read_image("chelsea.png")
    assert decode_image(base64.b64encode(photo).decode()) == (photo, "png")
    assert decode_image("not base64 at all!") is None
    assert decode_image(base64.b64encode(b"<html>quota exceeded</html>").decode()) is None
    assert decode_image("") is None


def test_the_negative_prompt_is_said_in_words() -> None:
    assert prompt_text("  white studio  ", "") == "white studio"
    assert prompt_text("white studio", " shadows, text ") == "white studio\n\nAvoid: shadows, text"


@pytest.mark.parametrize(("cls", "vendor"), [(GeminiProvider, "Gemini"), (OpenAIProvider, "OpenAI")])
async def test_health_of_an_unreachable_api_is_reported_and_cached(cls: Provider, vendor: str) -> None:
    # Nothing listens on a port that was just free: the connection is refused at once.
    provider = cls(api_base=f"http://127.0.0.1:{free_port()}/v1", api_key="key-0123456789", max_concurrency=3)
    try:
        assert provider.max_concurrency == 3
        report = await provider.health()
        assert report["healthy"] is False
        assert report["detail"].startswith(f"the {vendor} API is unreachable")
        assert report["provider"] == provider.name and report["model"] == provider.model
        assert await provider.health() is report
    finally:
        await provider.close()


class EndlessAnswer:
    """A 200 that never ends (1 MiB pieces until the client goes away), counting what it wrote."""

    def __init__(self) -> None:
        self.sent = 0

    def __call__(self, handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.end_headers()
        piece = b" " * (1 << 20)
        try:
            while self.sent < 1 << 30:
                handler.wfile.write(piece)
                self.sent += len(piece)
        except OSError:
            return


@pytest.mark.parametrize(("cls", "path"), [(GeminiProvider, "/v1/{model}"), (OpenAIProvider, "/v1/models/{model}")])
async def test_the_health_probe_reads_no_more_than_metadata_could_be(cls: Provider, path: str) -> None:
    # Whatever answers at the model's address (a wrong base URL, a hostile proxy) cannot make the probe read
    # more than a model's metadata could ever be.
    endless = EndlessAnswer()
    routes: dict[str, Route] = {}
    with http_server(routes) as base:
        provider = cls(api_base=f"{base}/v1", api_key="key-0123456789")
        routes[path.format(model=provider.model)] = endless
        try:
            report = await provider.health()
        finally:
            await provider.close()
    assert report["healthy"] is False, report
    assert f"more than {HEALTH_MAX_BYTES} bytes" in report["detail"]
    # Read whole, it would have been a gigabyte; socket buffers on loopback hold a few megabytes at most.
    assert endless.sent < 64 * 1024 * 1024, endless.sent
