"""Logging set-up: text or JSON lines (`LOG_FORMAT`), each with its request, tenant, job and image,
and never a key, token or signed URL.

Both filters sit on the handler, so they see every record that reaches it, from our loggers and from
libraries' (uvicorn's access lines, SAQ, httpx) alike.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal

from pythonjsonlogger.json import JsonFormatter

from capability_service.core import log_context

LogFormat = Literal["text", "json"]
REDACTED = "[REDACTED]"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(context)s: %(message)s"
# Secrets shorter than this are not searched for verbatim: they would blank out ordinary words.
MIN_SECRET_LENGTH = 6

# Query parameters that carry credentials: S3/R2 presigned URLs (X-Amz-*), other signed URLs
# (Signature, sig), tokens and keys.
_QUERY_SECRET = re.compile(
    r"(?i)([?&;](?:x-amz-signature|x-amz-credential|x-amz-security-token|signature|sig|token|access_token"
    r"|id_token|refresh_token|key|api_key|apikey|x-goog-api-key|password|secret)=)[^&#\s\"'<>]+"
)
# Header-like `name: value` / `name=value` pairs (also inside repr'd dicts and JSON): the scheme of an
# Authorization value is kept, its credentials are not.
_HEADER_SECRET = re.compile(
    r"(?i)\b(authorization|proxy-authorization|x-api-key|x-goog-api-key|api-key|x-metrics-token)"
    r"([\"']?\s*[:=]\s*[\"']?)(?:(bearer|basic|token)\s+)?[^\s\"',;}\]]+"
)
# user:password@ in URLs.
_URL_PASSWORD = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^@\s/]+@")

_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "context"}
_CONTEXT_FIELDS = ("request_id", "tenant", "job_id", "image_index")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` without credentials: signed-URL and token query parameters, Authorization / API-key
    header values, URL passwords, and each of `secrets` wherever it appears."""
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    text = _QUERY_SECRET.sub(lambda m: m.group(1) + REDACTED, text)
    text = _HEADER_SECRET.sub(
        lambda m: m.group(1) + m.group(2) + (m.group(3) + " " if m.group(3) else "") + REDACTED, text
    )
    return _URL_PASSWORD.sub(lambda m: m.group(1) + REDACTED + "@", text)


class RedactSecrets(logging.Filter):
    """Rewrites a record's message, traceback, stack and extra text fields without credentials."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        # Longest first, so a secret containing another is replaced whole.
        self.secrets = sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            # A broken format call: logging reports it itself; keep the raw template.
            message = str(record.msg)
        record.msg, record.args = redact(message, self.secrets), ()
        if record.exc_info:
            # Formatted once here, redacted, and the original dropped, so no formatter renders it again.
            record.exc_text = redact(self._formatter.formatException(record.exc_info), self.secrets)
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        for name, value in list(record.__dict__.items()):
            if name not in _STANDARD_ATTRS and isinstance(value, str):
                setattr(record, name, redact(value, self.secrets))
        return True


class AddContext(logging.Filter):
    """Puts the request id, tenant, job id and image index that apply on the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = log_context.current()
        for name in _CONTEXT_FIELDS:
            if name in context and getattr(record, name, None) is None:
                setattr(record, name, context[name])
        values = {name: getattr(record, name, None) for name in _CONTEXT_FIELDS}
        parts = [f"{name}={value}" for name, value in values.items() if value is not None]
        record.context = f" [{' '.join(parts)}]" if parts else ""
        return True


def _iso_time(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """`time level logger [context]: message`, time in UTC ISO 8601."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _iso_time(record)


class JsonLineFormatter(JsonFormatter):
    """One JSON object per line: time, level, message, logger, then the context and extra fields."""

    def __init__(self) -> None:
        super().__init__(
            fmt=["asctime", "levelname", "message", "name"],
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            # `context` is the text format's rendering of fields this format has on their own;
            # `color_message` is uvicorn's message with terminal colour codes.
            reserved_attrs=[*sorted(_STANDARD_ATTRS - {"message", "asctime"}), "context", "color_message"],
            json_ensure_ascii=False,
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _iso_time(record)


def build_handler(fmt: LogFormat, secrets: Iterable[str] = (), stream: Any = None) -> logging.Handler:
    """A stream handler (stderr by default) writing `fmt` lines with context and without secrets."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonLineFormatter() if fmt == "json" else TextFormatter(TEXT_FORMAT))
    handler.addFilter(AddContext())
    handler.addFilter(RedactSecrets(secrets))
    handler.set_name("capability-service")
    return handler


def configure_logging(level: str, fmt: LogFormat = "text", secrets: Iterable[str] = ()) -> None:
    """Send every log record at `level` and above to stderr as `fmt` lines.

    Calling it again replaces the handler it installed (and only that one), so tests and embedding
    applications keep their own handlers.
    """
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == "capability-service":
            root.removeHandler(existing)
    root.addHandler(build_handler(fmt, secrets))
    root.setLevel(level)
    # libvips narrates every operation at INFO; keep its warnings and errors only.
    logging.getLogger("pyvips").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    # uvicorn's loggers write through this handler (`serve` runs uvicorn without its own log set-up).
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
