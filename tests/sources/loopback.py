"""Loopback HTTP servers for source tests that count every TCP connection they accept.

Counting connections (not just requests) is what proves a refused address was never connected to.
Routes write raw HTTP, so a test can send exactly the lying headers or slow bodies it needs.
"""

from __future__ import annotations

import gzip
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Route = Callable[[BaseHTTPRequestHandler], None]


@dataclass
class Stats:
    connections: int = 0
    requests: list[str] = field(default_factory=list)
    active: int = 0
    max_active: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hits(self, path: str) -> int:
        return sum(1 for seen in self.requests if seen == path)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    stats: Stats

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        with self.stats.lock:
            self.stats.connections += 1
        return conn, addr


@dataclass
class Loopback:
    url: str
    host: str
    port: int
    stats: Stats


@contextmanager
def serve(routes: dict[str, Route], host: str = "127.0.0.1", port: int = 0) -> Iterator[Loopback]:
    """A threaded HTTP/1.1 server on `host` answering `routes`."""
    stats = Stats()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            with stats.lock:
                stats.requests.append(path)
            route = routes.get(path)
            if route is None:
                send(self, 404, b"not found", content_type="text/plain")
                return
            try:
                route(self)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

    server = _Server((host, port), Handler)
    server.stats = stats
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    bound_port = server.server_address[1]
    try:
        yield Loopback(url=f"http://{host}:{bound_port}", host=host, port=bound_port, stats=stats)
    finally:
        server.shutdown()
        server.server_close()


def send(
    handler: BaseHTTPRequestHandler,
    status: int,
    body: bytes,
    *,
    content_type: str = "image/jpeg",
    headers: dict[str, str] | None = None,
) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


def image(data: bytes, *, close: bool = False) -> Route:
    def route(handler: BaseHTTPRequestHandler) -> None:
        send(handler, 200, data, headers={"Connection": "close"} if close else None)
        if close:
            handler.close_connection = True

    return route


def redirect(location: str, status: int = 302) -> Route:
    def route(handler: BaseHTTPRequestHandler) -> None:
        send(handler, status, b"", content_type="text/plain", headers={"Location": location})

    return route


def status(code: int) -> Route:
    def route(handler: BaseHTTPRequestHandler) -> None:
        send(handler, code, f"status {code}".encode(), content_type="text/plain")

    return route


def flaky(failures: int, data: bytes, code: int = 503) -> Route:
    """Answers `code` the first `failures` times, then the image."""
    count = {"n": 0}

    def route(handler: BaseHTTPRequestHandler) -> None:
        count["n"] += 1
        if count["n"] <= failures:
            send(handler, code, b"busy", content_type="text/plain")
        else:
            send(handler, 200, data)

    return route


def drop_then_serve(data: bytes) -> Route:
    """The first answer breaks off mid-body (a dropped connection); the next one is whole."""
    count = {"n": 0}

    def route(handler: BaseHTTPRequestHandler) -> None:
        count["n"] += 1
        if count["n"] == 1:
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data[: len(data) // 3])
            handler.wfile.flush()
            handler.connection.shutdown(socket.SHUT_RDWR)
            handler.close_connection = True
            return
        send(handler, 200, data)

    return route


def chunked(head: bytes, total: int, *, claimed_length: int | None = None, chunk: int = 64 * 1024) -> Route:
    """`total` bytes starting with `head`, chunked; optionally with a false, small Content-Length."""

    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "image/jpeg")
        handler.send_header("Transfer-Encoding", "chunked")
        if claimed_length is not None:
            handler.send_header("Content-Length", str(claimed_length))
        handler.end_headers()
        body = head + b"\0" * (total - len(head))
        for start in range(0, len(body), chunk):
            piece = body[start : start + chunk]
            handler.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        handler.wfile.write(b"0\r\n\r\n")

    return route


def close_delimited(head: bytes, total: int) -> Route:
    """An HTTP/1.0-style answer: no length at all, the body ends when the connection closes."""

    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Type: image/jpeg\r\nConnection: close\r\n\r\n")
        body = head + b"\0" * (total - len(head))
        for start in range(0, len(body), 64 * 1024):
            handler.wfile.write(body[start : start + 64 * 1024])
        handler.close_connection = True

    return route


def gzip_bomb(head: bytes, total: int) -> Route:
    """A small gzip body that inflates to `total` bytes, sent although identity was asked for."""
    packed = gzip.compress(head + b"\0" * (total - len(head)), compresslevel=9)

    def route(handler: BaseHTTPRequestHandler) -> None:
        send(handler, 200, packed, headers={"Content-Encoding": "gzip"})

    return route


def slow_drip(head: bytes, *, interval: float, total: int = 100_000) -> Route:
    """Declares `total` bytes and sends one byte every `interval` seconds: never idle long enough
    for a per-read timeout, far too slow to finish."""

    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "image/jpeg")
        handler.send_header("Content-Length", str(total))
        handler.end_headers()
        handler.wfile.write(head)
        handler.wfile.flush()
        for _ in range(total - len(head)):
            time.sleep(interval)
            handler.wfile.write(b"\0")
            handler.wfile.flush()

    return route


def counted(data: bytes, stats: Stats, wait: Callable[[], object]) -> Route:
    """Serves `data` once `wait()` returns (a pause, or an event set by the test), counting requests in
    progress in `stats`."""

    def route(handler: BaseHTTPRequestHandler) -> None:
        with stats.lock:
            stats.active += 1
            stats.max_active = max(stats.max_active, stats.active)
        try:
            wait()
            send(handler, 200, data)
        finally:
            with stats.lock:
                stats.active -= 1

    return route
