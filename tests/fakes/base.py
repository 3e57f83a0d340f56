"""A real HTTP server on loopback that plays a remote image model, for tests and benchmarks.

Every request is recorded (headers, body, arrival time). Answers come, in this order, from the
scripted queue (`push`), from a `rule` that looks at the request, or from the model's normal
behaviour. A fixed `latency` (the time to each model answer, rendering included) lets benchmarks
measure concurrency; the server also counts how many model calls were in flight at once.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

import pyvips


@dataclass
class Recorded:
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    received: float
    # Filled by the model server once it has parsed the body (JSON or multipart fields).
    parsed: dict[str, Any] = field(default_factory=dict)

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    """A complete HTTP answer."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status=status, body=json.dumps(payload).encode(), headers=headers or {})


@dataclass
class Stall:
    """Answer normally, but only after `seconds` (the client should have given up by then)."""

    seconds: float


@dataclass
class Drop:
    """Close the connection without answering."""


@dataclass
class Streamed:
    """An answer whose body is written piece by piece as `chunks` makes it, never held whole.

    With `length` the answer declares its size in Content-Length; without it, it is sent chunked
    (as a proxy that does not know the size would), so only the bytes that arrive tell the size.
    """

    chunks: Callable[[], Iterator[bytes]]
    length: int | None = None
    status: int = 200
    content_type: str = "application/json"
    # Bytes actually written before the client stopped reading (or all of them).
    sent: int = 0


Scripted = Reply | Stall | Drop | Streamed
Rule = Callable[[Recorded], Scripted | None]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Recorded(
            method=self.command,
            path=self.path,
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body,
            received=time.monotonic(),
        )
        answer = self.server.owner._dispatch(request)
        if isinstance(answer, Drop):
            self.close_connection = True
            return
        if isinstance(answer, Streamed):
            self._stream(answer)
            return
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(answer.body)))
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(answer.body)
        except OSError:
            # The client gave up (a timeout test); nothing to answer any more.
            self.close_connection = True

    def _stream(self, answer: Streamed) -> None:
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            if answer.length is not None:
                self.send_header("Content-Length", str(answer.length))
            else:
                self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for chunk in answer.chunks():
                if answer.length is None:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                else:
                    self.wfile.write(chunk)
                answer.sent += len(chunk)
            if answer.length is None:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            # The client stopped reading (an answer over its size cap): nothing more to send.
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 refuses bursts of new connections (a client's first
    # requests all at once); real APIs accept them.
    request_queue_size = 128
    owner: FakeModelServer


class FakeModelServer:
    """Base of the fake model servers; subclasses implement `route`."""

    def __init__(self, *, api_key: str, latency: float = 0.0) -> None:
        self.api_key = api_key
        self.latency = latency
        self.requests: list[Recorded] = []
        self.rule: Rule | None = None
        self.in_flight = 0
        self.max_in_flight = 0
        self._script: deque[Scripted] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- life ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Scheme, host and port, without the API's version prefix."""
        assert self._server is not None, "the server is not running"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

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

    # -- scripting ----------------------------------------------------------------------------

    def push(self, *answers: Scripted) -> None:
        """Queue answers for the next model calls (after authentication and request checks pass)."""
        with self._lock:
            self._script.extend(answers)

    def model_calls(self) -> list[Recorded]:
        """The recorded requests that were model calls (not health checks)."""
        with self._lock:
            return [request for request in self.requests if request.method == "POST"]

    # -- subclass hooks -----------------------------------------------------------------------

    def route(self, request: Recorded) -> Reply | None:
        """Check the request (path, auth, body); an error `Reply`, or None to go on to the model."""
        raise NotImplementedError

    def answer(self, request: Recorded) -> Reply:
        """The model's normal answer to a valid request."""
        raise NotImplementedError

    def stalled_answer(self, request: Recorded) -> Reply:
        return self.answer(request)

    # -- the request path ---------------------------------------------------------------------

    def _dispatch(self, request: Recorded) -> Reply | Drop | Streamed:
        with self._lock:
            self.requests.append(request)
        early = self.route(request)
        if early is not None:
            return early
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            scripted = self._script.popleft() if self._script else None
        started = time.monotonic()
        try:
            if scripted is None and self.rule is not None:
                scripted = self.rule(request)
            if isinstance(scripted, Stall):
                self._stopping.wait(scripted.seconds)
                return self.stalled_answer(request)
            reply = scripted if scripted is not None else self.answer(request)
            # `latency` is the whole answer time, rendering included, as a remote model's would be.
            remaining = self.latency - (time.monotonic() - started)
            if remaining > 0:
                self._stopping.wait(remaining)
            return reply
        finally:
            with self._lock:
                self.in_flight -= 1


def render_result(source: bytes | None, width: int, height: int, tint: int) -> bytes:
    """A real PNG of `width` x `height`: `source` (if any) scaled onto a tinted gradient backdrop.

    Stands in for a model's edit: the right shape, real pixels, the input recognisably inside.
    """
    red, green, blue = 120 + tint % 120, 140 + (tint // 7) % 100, 160 + (tint // 13) % 90
    ramp = pyvips.Image.xyz(width, height)[1] * (60.0 / max(1, height - 1))
    backdrop = (
        ramp.bandjoin([ramp, ramp]).linear([1, 1, 1], [red, green, blue]).cast("uchar").copy(interpretation="srgb")
    )
    if source is not None:
        product = pyvips.Image.thumbnail_buffer(source, int(width * 0.8), height=int(height * 0.8))
        if product.bands < 3:
            product = product.colourspace("srgb")
        if product.hasalpha():
            product = product.flatten(background=[red, green, blue])
        backdrop = backdrop.insert(product, (width - product.width) // 2, (height - product.height) // 2)
    return bytes(backdrop.pngsave_buffer(compression=1))
