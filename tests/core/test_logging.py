"""Log lines: text and JSON formats, the context they carry, and no credential in them."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from capability_service.core import log_context
from capability_service.core.logging import REDACTED, build_handler, configure_logging, redact

SECRET_KEY = "shop-key-7f3a9c1e5b"
SIGNATURE = "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3"
CREDENTIAL = "AKIAIOSFODNN7EXAMPLE"
TOKEN = "tok-0f9e8d7c6b5a"
BEARER = "eyJhbGciOiJIUzI1NiJ9.payload.sig"
PASSWORD = "hunter2-but-longer"
SIGNED_URL = (
    "https://bucket.r2.cloudflarestorage.com/ai-playground/u/j/0.webp"
    f"?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={CREDENTIAL}%2F20260101%2Fauto%2Fs3%2Faws4_request"
    f"&X-Amz-Date=20260101T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature={SIGNATURE}"
)
EVERY_SECRET = (SECRET_KEY, SIGNATURE, CREDENTIAL, TOKEN, BEARER, PASSWORD)


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    named = logging.getLogger("tests.core.logging")
    named.setLevel(logging.DEBUG)
    named.propagate = False
    yield named
    named.handlers.clear()


def write(logger: logging.Logger, fmt: str, *, secrets: tuple[str, ...] = ()) -> io.StringIO:
    stream = io.StringIO()
    logger.handlers.clear()
    logger.addHandler(build_handler(fmt, secrets, stream=stream))  # type: ignore[arg-type]
    return stream


def log_every_kind_of_secret(logger: logging.Logger) -> None:
    logger.info("fetched %s", SIGNED_URL)
    logger.info("callback https://hooks.example.com/done?job=1&token=%s&sig=%s", TOKEN, SIGNATURE)
    logger.warning("request headers: %s", {"Authorization": f"Bearer {BEARER}", "X-API-Key": SECRET_KEY})
    logger.warning("Authorization: Bearer %s", BEARER)
    logger.info("x-goog-api-key=%s", SECRET_KEY)
    logger.info("proxy at https://user:%s@proxy.example.com:8080/", PASSWORD)
    logger.info("the key %s was used", SECRET_KEY)
    try:
        raise RuntimeError(f"upload to {SIGNED_URL} failed")
    except RuntimeError:
        logger.exception("storage error")
    logger.info("extra fields too", extra={"url": f"https://x.example/?key={SECRET_KEY}"})


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_no_key_token_or_signed_url_reaches_the_output(logger: logging.Logger, fmt: str) -> None:
    stream = write(logger, fmt, secrets=(SECRET_KEY,))
    log_every_kind_of_secret(logger)
    output = stream.getvalue()
    assert output.count("\n") >= 9
    for secret in EVERY_SECRET:
        assert secret not in output, f"{secret!r} leaked into:\n{output}"
    # What is not secret stays readable.
    assert "bucket.r2.cloudflarestorage.com/ai-playground/u/j/0.webp" in output
    assert "X-Amz-Expires=3600" in output
    assert "Bearer " + REDACTED in output
    assert "RuntimeError: upload to" in output
    assert "hooks.example.com/done?job=1" in output


def test_json_lines_are_objects_with_time_level_message_logger(logger: logging.Logger) -> None:
    stream = write(logger, "json")
    logger.info("plain line %d", 7)
    try:
        1 / 0  # noqa: B018 - the exception is the point
    except ZeroDivisionError:
        logger.error("with a traceback", exc_info=True)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "plain line 7"
    assert first["level"] == "INFO"
    assert first["logger"] == "tests.core.logging"
    assert first["time"].endswith("Z") and "T" in first["time"]
    # No context applies here, so none is written.
    assert not {"request_id", "tenant", "job_id", "image_index", "context"} & set(first)
    assert second["level"] == "ERROR"
    assert "ZeroDivisionError" in second["exc_info"]


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_image_work_lines_carry_tenant_job_and_image(logger: logging.Logger, fmt: str) -> None:
    stream = write(logger, fmt)
    with log_context.image_work(tenant="shop-a", job_id="job-42", index=3):
        logger.info("inside")
    logger.info("outside")
    inside, outside = stream.getvalue().splitlines()
    if fmt == "json":
        record = json.loads(inside)
        assert (record["tenant"], record["job_id"], record["image_index"]) == ("shop-a", "job-42", 3)
        assert "job_id" not in json.loads(outside)
    else:
        assert "[tenant=shop-a job_id=job-42 image_index=3]: inside" in inside
        assert "job_id" not in outside


def test_redact_keeps_ordinary_text() -> None:
    text = "missing X-API-Key header; invalid API key; key frames: 3; the token count is 12"
    assert redact(text) == text


def test_configure_logging_replaces_only_its_own_handler() -> None:
    root = logging.getLogger()
    # Others' handlers (pytest's); one of ours left by an app built earlier in this process is replaced.
    before = [handler for handler in root.handlers if handler.get_name() != "capability-service"]
    level = root.level
    try:
        configure_logging("INFO", "json")
        configure_logging("WARNING", "text")
        ours = [handler for handler in root.handlers if handler.get_name() == "capability-service"]
        assert len(ours) == 1
        assert all(handler in root.handlers for handler in before)
        assert root.level == logging.WARNING
    finally:
        for handler in list(root.handlers):
            if handler not in before:
                root.removeHandler(handler)
        root.setLevel(level)
