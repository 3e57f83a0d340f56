"""Uploads retried through transient storage failures: a loopback S3 endpoint answering 503 and 403, errno classes.

The restart of a real SeaweedFS in the middle of a job is in `tests/api/test_storage_outage.py`.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from capability_service.storage.base import StorageError, TransientStorageError
from capability_service.storage.local import write_error
from capability_service.storage.retry import put_with_retry
from capability_service.storage.s3 import S3Storage
from tests.support.servers import QuietServer, serving

JPEG = (Path(__file__).parent.parent / "data" / "rocket.jpg").read_bytes()
KEY = "ai-playground/default/u/j/0.jpg"


class S3Answers:
    """PUT answers of a loopback S3 endpoint: the listed error statuses first, then 200 with an ETag."""

    def __init__(self, errors: list[int]) -> None:
        self.errors = list(errors)
        self.bodies: list[bytes] = []
        self.lock = threading.Lock()

    def handler(self) -> type[BaseHTTPRequestHandler]:
        answers = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def do_PUT(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with answers.lock:
                    answers.bodies.append(body)
                    status = answers.errors.pop(0) if answers.errors else 200
                if status == 200:
                    self.send_response(200)
                    self.send_header("ETag", '"0123456789abcdef"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                code = "ServiceUnavailable" if status >= 500 else "AccessDenied"
                xml = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>status {status}</Message></Error>"
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(xml)))
                self.end_headers()
                self.wfile.write(xml.encode())

        return Handler


@contextmanager
def s3_endpoint(answers: S3Answers) -> Iterator[str]:
    with serving(QuietServer(("127.0.0.1", 0), answers.handler()), name="s3-answers") as url:
        yield url


@pytest.fixture
async def make_s3() -> AsyncIterator[type[S3Storage]]:
    made: list[S3Storage] = []

    class Tracked(S3Storage):
        def __init__(self, **kwargs: object) -> None:
            super().__init__(**kwargs)  # type: ignore[arg-type]
            made.append(self)

    yield Tracked
    for storage in made:
        await storage.close()


def s3_for(make_s3: type[S3Storage], endpoint: str) -> S3Storage:
    # One attempt per put from boto3 itself, so every request the server sees is one of ours.
    return make_s3(
        bucket="results",
        endpoint_url=endpoint,
        access_key_id="AKIDLOOPBACK",
        secret_access_key="loopback-secret",
        public_base_url="https://cdn.example.com",
        max_attempts=1,
    )


def retries_counted() -> float:
    return REGISTRY.get_sample_value("capsvc_storage_upload_retries_total", {"backend": "s3"}) or 0.0


def retry_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "capability_service.storage.retry"]


async def test_a_5xx_burst_is_retried_until_stored(make_s3: type[S3Storage], caplog: pytest.LogCaptureFixture) -> None:
    answers = S3Answers([503, 503, 500])
    before = retries_counted()
    with s3_endpoint(answers) as endpoint:
        stored = await put_with_retry(s3_for(make_s3, endpoint), KEY, JPEG, "image/jpeg", window=30, backoff=0.05)
    assert stored.url == f"https://cdn.example.com/{KEY}"
    assert answers.bodies == [JPEG] * 4
    assert retries_counted() - before == 3
    [line] = retry_lines(caplog)
    assert "stored after 4 attempts" in line.getMessage() and "ServiceUnavailable" in line.getMessage()
    assert line.exc_info is None


async def test_retries_end_with_the_window(make_s3: type[S3Storage], caplog: pytest.LogCaptureFixture) -> None:
    answers = S3Answers([503] * 1000)
    with s3_endpoint(answers) as endpoint, pytest.raises(TransientStorageError) as failure:
        await put_with_retry(s3_for(make_s3, endpoint), KEY, JPEG, "image/jpeg", window=0.5, backoff=0.05)
    assert "ServiceUnavailable" in str(failure.value)
    assert 1 < len(answers.bodies) < 1000
    [line] = retry_lines(caplog)
    assert "gave up" in line.getMessage()


async def test_no_window_means_one_attempt(make_s3: type[S3Storage], caplog: pytest.LogCaptureFixture) -> None:
    answers = S3Answers([503])
    with s3_endpoint(answers) as endpoint, pytest.raises(TransientStorageError):
        await put_with_retry(s3_for(make_s3, endpoint), KEY, JPEG, "image/jpeg", window=0)
    assert len(answers.bodies) == 1
    assert retry_lines(caplog) == []


async def test_a_refusal_is_not_retried(make_s3: type[S3Storage], caplog: pytest.LogCaptureFixture) -> None:
    answers = S3Answers([403])
    with s3_endpoint(answers) as endpoint, pytest.raises(StorageError) as failure:
        await put_with_retry(s3_for(make_s3, endpoint), KEY, JPEG, "image/jpeg", window=30)
    assert not isinstance(failure.value, TransientStorageError)
    assert "AccessDenied" in str(failure.value)
    assert len(answers.bodies) == 1
    assert retry_lines(caplog) == []


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.ESTALE, errno.ETIMEDOUT])
def test_local_write_errors_that_can_clear_are_transient(code: int) -> None:
    assert isinstance(write_error(OSError(code, "x")), TransientStorageError)


@pytest.mark.parametrize("code", [errno.EACCES, errno.EPERM, errno.EROFS, errno.ENAMETOOLONG, errno.ENOTDIR])
def test_local_write_errors_that_stay_are_not(code: int) -> None:
    error = write_error(OSError(code, "x"))
    assert isinstance(error, StorageError) and not isinstance(error, TransientStorageError)
