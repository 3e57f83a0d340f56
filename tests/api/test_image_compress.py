"""`POST /api/v1/image/compress` on a real uvicorn server over real TCP connections."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from PIL import Image

from capability_service.core.config import Settings
from capability_service.main import create_app
from tests.imaging.samples import XMP, photo_with_gps
from tests.support.data import AUTH, read_image
from tests.support.servers import free_port, wait_for_port

UPLOAD_LIMIT = 4 * 1024 * 1024
URL = "/api/v1/image/compress"


@pytest.fixture
def server(make_settings: Callable[..., Settings]) -> Iterator[str]:
    """The real app behind uvicorn on a free loopback port, with a 4 MiB upload limit."""
    app = create_app(make_settings(max_upload_bytes=UPLOAD_LIMIT))
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    wait_for_port(port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        instance.should_exit = True
        thread.join(timeout=15)


def post(base: str, data: bytes, filename: str = "photo.jpg", **fields: Any) -> httpx.Response:
    files = {"file": (filename, data, "application/octet-stream")}
    form = {key: str(value) for key, value in fields.items()}
    return httpx.post(base + URL, files=files, data=form, headers=AUTH, timeout=60)


def test_compresses_a_photo_with_headers(server: str) -> None:
    camera = read_image("camera_3648x2736.jpg")
    response = post(server, camera, quality="standard", format="webp", maxSize=1200)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/webp"
    image = Image.open(io.BytesIO(response.content))
    assert image.size == (1200, 900)
    headers = response.headers
    assert int(headers["x-original-size"]) == len(camera)
    assert int(headers["x-result-size"]) == len(response.content)
    assert (headers["x-original-width"], headers["x-original-height"]) == ("3648", "2736")
    assert (headers["x-result-width"], headers["x-result-height"]) == ("1200", "900")
    assert float(headers["x-compression-ratio"]) == pytest.approx(len(camera) / len(response.content), rel=1e-3)
    assert headers["x-result-format"] == "webp" and headers["x-quality"] == "85"


@pytest.mark.parametrize(("fmt", "mime"), [("jpg", "image/jpeg"), ("png", "image/png"), ("avif", "image/avif")])
def test_formats(server: str, fmt: str, mime: str) -> None:
    response = post(server, read_image("grace_hopper.jpg"), format=fmt, maxSize=256)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == mime
    assert max(int(response.headers["x-result-width"]), int(response.headers["x-result-height"])) == 256


def test_cover_crop_and_no_metadata(server: str) -> None:
    response = post(server, photo_with_gps(), format="jpg", maxSize=200, maintainAspect="false")
    assert response.status_code == 200, response.text
    assert Image.open(io.BytesIO(response.content)).size == (200, 200)
    assert b"TestCam" not in response.content and XMP not in response.content


@pytest.mark.parametrize(
    ("fields", "word"),
    [
        ({"quality": "ultra"}, "quality"),
        ({"format": "gif"}, "format"),
        ({"maxSize": "big"}, "maxSize"),
        ({"maxSize": "5"}, "max"),
    ],
)
def test_bad_fields_are_400(server: str, fields: dict[str, str], word: str) -> None:
    response = post(server, read_image("rocket.jpg"), **fields)
    assert response.status_code == 400
    assert word.lower() in response.json()["detail"].lower()


def test_missing_file_is_400_and_missing_key_401(server: str) -> None:
    response = httpx.post(server + URL, data={"quality": "low"}, headers=AUTH)
    assert response.status_code == 400
    assert "file" in response.json()["detail"]
    files = {"file": ("a.jpg", read_image("rocket.jpg"), "image/jpeg")}
    assert httpx.post(server + URL, files=files).status_code == 401


def test_two_files_are_400_not_one_silently_dropped(server: str) -> None:
    files = [
        ("file", ("a.jpg", read_image("rocket.jpg"), "image/jpeg")),
        ("file", ("b.png", read_image("chelsea.png"), "image/png")),
    ]
    response = httpx.post(server + URL, files=files, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["errors"] == [{"field": "file", "message": "send one image per request (2 were sent)"}]


def test_a_file_sent_as_a_plain_field_is_400_in_words(server: str) -> None:
    response = httpx.post(server + URL, data={"file": "photo.jpg"}, files={"other": ("x", b"x")}, headers=AUTH)
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert detail.startswith("file: ") and "filename" in detail and "<class" not in detail


@pytest.mark.parametrize(
    "data",
    [b"", b"<svg xmlns='http://www.w3.org/2000/svg'/>", None],
)
def test_unreadable_images_are_422(server: str, data: bytes | None) -> None:
    body = read_image("camera_3648x2736.jpg")[:300_000] if data is None else data
    response = post(server, body, filename="photo.png")
    assert response.status_code == 422
    assert response.json()["detail"]


def test_oversize_upload_by_content_length_is_413_before_the_body(server: str) -> None:
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = (
            f"POST {URL} HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {AUTH['X-API-Key']}\r\n"
            "Content-Type: multipart/form-data; boundary=x\r\n"
            f"Content-Length: {50 * 1024 * 1024}\r\n\r\n"
        )
        sock.sendall(head.encode())
        # Not one byte of the 50 MiB body is sent: the answer must come anyway.
        answer = sock.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 413")
    assert "limit" in answer


def test_oversize_streamed_upload_is_413_while_streaming(server: str) -> None:
    host, port = server.removeprefix("http://").split(":")
    chunk = b"\0" * 256 * 1024
    sent = 0
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = (
            f"POST {URL} HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {AUTH['X-API-Key']}\r\n"
            "Content-Type: multipart/form-data; boundary=x\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        sock.sendall(head.encode())
        preamble = b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
        sock.sendall(b"%x\r\n%s\r\n" % (len(preamble), preamble))
        sock.settimeout(0.05)
        answer = b""
        # Up to 100 MiB would follow; the server must answer long before that.
        while sent < 100 * 1024 * 1024 and not answer:
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
                answer = sock.recv(4096)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        sock.settimeout(5)
        deadline = time.monotonic() + 5
        while not answer and time.monotonic() < deadline:
            answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 4 * UPLOAD_LIMIT


def test_upload_under_the_limit_passes(server: str) -> None:
    data = read_image("grace_hopper.jpg")
    assert len(data) < UPLOAD_LIMIT
    assert post(server, data, maxSize=64).status_code == 200
