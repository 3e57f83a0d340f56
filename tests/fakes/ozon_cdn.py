"""A fake of Ozon's picture CDN on loopback: serves given bytes per path, with latency and misbehaviour.

    with FakeCdn(latency=0.1).running() as cdn:
        url = cdn.put("s3/multimedia-1/a.jpg", jpeg_bytes)
        cdn.html("s3/multimedia-1/b.jpg")         # answers 200 text/html instead of the picture
        cdn.slow("s3/multimedia-1/c.jpg", 30)     # answers only after 30 s (released at stop)

It counts requests and the most downloads in flight at once, so tests can check concurrency limits.
"""

from __future__ import annotations

from tests.fakes.base import FakeModelServer, Recorded, Reply, Stall

HTML_PAGE = b"<!DOCTYPE html><html><head><title>Not found</title></head><body>Page not found</body></html>"


class FakeCdn(FakeModelServer):
    """The fake servers' machinery (recording, `latency`, in-flight counts) answering files by path.

    Every request is a download: none is refused early, so each one counts as in flight.
    """

    def __init__(self, *, latency: float = 0.0) -> None:
        # A CDN asks for no key.
        super().__init__(api_key="", latency=latency)
        self.files: dict[str, tuple[bytes, str]] = {}
        self.delays: dict[str, float] = {}
        # A `slow` path waits its own delay instead of `latency`.
        self.rule = self._slow_paths

    def file_url(self, path: str) -> str:
        return f"{self.url}/{path.lstrip('/')}"

    def put(self, path: str, data: bytes, content_type: str = "image/jpeg") -> str:
        with self._lock:
            self.files["/" + path.lstrip("/")] = (data, content_type)
        return self.file_url(path)

    def html(self, path: str) -> str:
        return self.put(path, HTML_PAGE, "text/html; charset=utf-8")

    def slow(self, path: str, seconds: float, data: bytes = b"\xff\xd8\xff") -> str:
        with self._lock:
            self.delays["/" + path.lstrip("/")] = seconds
        return self.put(path, data)

    def route(self, request: Recorded) -> Reply | None:
        return None

    def answer(self, request: Recorded) -> Reply:
        with self._lock:
            found = self.files.get(_path(request))
        if found is None:
            return Reply(status=404, body=b"", content_type="text/plain")
        data, content_type = found
        return Reply(body=data, content_type=content_type, headers={"Cache-Control": "public, max-age=31536000"})

    def _slow_paths(self, request: Recorded) -> Stall | None:
        with self._lock:
            delay = self.delays.get(_path(request))
        return Stall(delay) if delay is not None else None


def _path(request: Recorded) -> str:
    return request.path.split("?", 1)[0]
