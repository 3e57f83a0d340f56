"""A fake of Ozon's picture CDN on loopback: serves given bytes per path, with latency and misbehaviour.

    with FakeCdn(latency=0.1).running() as cdn:
        url = cdn.put("s3/multimedia-1/a.jpg", jpeg_bytes)
        cdn.html("s3/multimedia-1/b.jpg")         # answers 200 text/html instead of the picture
        cdn.slow("s3/multimedia-1/c.jpg", 30)     # answers only after 30 s (released at stop)

It counts requests and the most downloads in flight at once, so tests can check concurrency limits.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

HTML_PAGE = b"<!DOCTYPE html><html><head><title>Not found</title></head><body>Page not found</body></html>"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_GET(self) -> None:
        self.server.owner._serve(self)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Accept bursts of new connections as a CDN does (socketserver's default backlog is 5).
    request_queue_size = 128
    owner: FakeCdn

    def handle_error(self, request: object, client_address: object) -> None:
        # Clients that give up mid-answer (timeouts under test) are expected.
        return


class FakeCdn:
    def __init__(self, *, latency: float = 0.0) -> None:
        self.latency = latency
        self.files: dict[str, tuple[bytes, str]] = {}
        self.delays: dict[str, float] = {}
        self.requests: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None

    @property
    def base(self) -> str:
        assert self._server is not None, "the CDN is not running"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def url(self, path: str) -> str:
        return f"{self.base}/{path.lstrip('/')}"

    def put(self, path: str, data: bytes, content_type: str = "image/jpeg") -> str:
        with self._lock:
            self.files["/" + path.lstrip("/")] = (data, content_type)
        return self.url(path)

    def html(self, path: str) -> str:
        return self.put(path, HTML_PAGE, "text/html; charset=utf-8")

    def slow(self, path: str, seconds: float, data: bytes = b"\xff\xd8\xff") -> str:
        with self._lock:
            self.delays["/" + path.lstrip("/")] = seconds
        return self.put(path, data)

    def start(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @contextmanager
    def running(self) -> Iterator[Self]:
        self.start()
        try:
            yield self
        finally:
            self.stop()

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?", 1)[0]
        with self._lock:
            self.requests.append(path)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            found = self.files.get(path)
            delay = self.delays.get(path, self.latency)
        try:
            if delay:
                self._stopping.wait(delay)
            if found is None:
                handler.send_error(404)
                return
            data, content_type = found
            try:
                handler.send_response(200)
                handler.send_header("Content-Type", content_type)
                handler.send_header("Content-Length", str(len(data)))
                handler.send_header("Cache-Control", "public, max-age=31536000")
                handler.end_headers()
                handler.wfile.write(data)
            except OSError:
                handler.close_connection = True
        finally:
            with self._lock:
                self.in_flight -= 1
