"""Real servers on loopback for tests: a static HTTP server and a private `redis-server`."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar, TypeVar

import pytest

Route = Callable[[BaseHTTPRequestHandler], None]
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class RoutedHandler(BaseHTTPRequestHandler):
    routes: ClassVar[dict[str, Route]] = {}

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_GET(self) -> None:
        route = self.routes.get(self.path.split("?", 1)[0])
        if route is None:
            self.send_error(404)
            return
        route(self)


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        # Clients that hang up mid-answer (a cancelled download) are expected in these tests.
        return


@contextmanager
def serving(server: ThreadingHTTPServer, name: str = "test-http") -> Iterator[str]:
    """Run `server` (bound to 127.0.0.1) from a daemon thread; yields its base URL, stops it on exit."""
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def http_server(routes: dict[str, Route]) -> Iterator[str]:
    """A threaded HTTP server on 127.0.0.1 answering `routes`; yields its base URL."""
    handler = type("Handler", (RoutedHandler,), {"routes": routes})
    with serving(QuietServer(("127.0.0.1", 0), handler)) as base:
        yield base


def static_bytes(data: bytes, content_type: str = "image/jpeg", delay: float = 0.0) -> Route:
    def route(handler: BaseHTTPRequestHandler) -> None:
        if delay:
            time.sleep(delay)
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    return route


@contextmanager
def photo_server(photo: bytes, delays: dict[str, float]) -> Iterator[str]:
    """`photo` (a JPEG) at each path of `delays`, answered after that many seconds; yields the base URL."""
    with http_server({path: static_bytes(photo, delay=delay) for path, delay in delays.items()}) as base:
        yield base


@contextmanager
def redis_server() -> Iterator[str]:
    """A private, disk-less `redis-server` on a free port; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (Debian package `redis-server`)")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="redis-test-")
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@contextmanager
def required(server: AbstractContextManager[T], what: str) -> Iterator[T]:
    """Enter `server` for a fixture; one that cannot start (`RuntimeError`) skips the test, or fails it in CI."""
    with ExitStack() as stack:
        try:
            value = stack.enter_context(server)
        except RuntimeError as exc:
            if in_ci():
                pytest.fail(f"{what} is required in CI: {exc}")
            pytest.skip(str(exc))
        yield value
