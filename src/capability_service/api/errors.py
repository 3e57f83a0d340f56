"""Exception handlers: every expected failure is a 4xx/503 with `{"detail": "..."}` a person can act on."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from capability_service.core import log_context
from capability_service.jobs.errors import InvalidSubmission, JobConflict, JobNotFound, Unavailable
from capability_service.jobs.quotas import QuotaExceeded
from capability_service.jobs.store import JobStoreUnavailable
from capability_service.marketplaces.ozon_errors import (
    OzonAuthError,
    OzonCircleOpen,
    OzonCredentialsMissing,
    OzonError,
    OzonRateLimited,
    OzonRequestRejected,
)
from capability_service.plugins.base import InvalidConfig, OperationUnavailable, PluginDisabled
from capability_service.plugins.ozon.publish import PublishRefused

# How long a seller should wait after Ozon's circuit breaker opened ("Circle is open").
CIRCLE_OPEN_RETRY_SECONDS = 300


def ozon_error_status(exc: OzonError) -> tuple[int, dict[str, str]]:
    """Our HTTP status (and headers) for a failed Seller API call."""
    if isinstance(exc, OzonCredentialsMissing):
        return 400, {}
    if isinstance(exc, OzonAuthError):
        # A wrong Api-Key is a failed authentication; a wrong Client-Id is a malformed account reference.
        return (401, {}) if exc.which == "api_key" else (400, {})
    if isinstance(exc, OzonRateLimited):
        return 429, {"Retry-After": str(max(1, round(exc.retry_after)))}
    if isinstance(exc, OzonCircleOpen):
        return 503, {"Retry-After": str(CIRCLE_OPEN_RETRY_SECONDS)}
    if isinstance(exc, OzonRequestRejected):
        return 400, {}
    return 502, {"Retry-After": "5"}


log = logging.getLogger(__name__)

# What callers are told when the job store is down: no host, command or key of ours.
STORE_DOWN = "the job store is unavailable; try again shortly"


def _location(error: dict[str, Any]) -> str:
    if error.get("type") == "json_invalid":
        # FastAPI puts the character offset of a JSON syntax error where the field goes.
        return "body"
    # Drop FastAPI's "body"/"query" prefix: callers know their own field names.
    parts = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "header", "path")]
    return ".".join(parts) or "request"


def _message(error: dict[str, Any]) -> str:
    message = str(error.get("msg", "invalid"))
    if "Expected UploadFile" in message:
        # FastAPI's words name a Python class; the caller sent a plain form field where a file goes.
        return "expected an uploaded file (a multipart part with a filename), got a plain form field"
    cause = (error.get("ctx") or {}).get("error")
    if error.get("type") == "value_error" and cause is not None:
        # Our validators' own words, without pydantic's "Value error, " in front.
        return str(cause)
    return message


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": _location(error), "message": _message(error)} for error in exc.errors()]
        detail = "; ".join(f"{error['field']}: {error['message']}" for error in errors)
        return JSONResponse({"detail": detail, "errors": errors}, status_code=400)

    @app.exception_handler(InvalidSubmission)
    async def invalid_submission(request: Request, exc: InvalidSubmission) -> JSONResponse:
        return JSONResponse(
            {"detail": str(exc), "errors": [{"field": exc.field, "message": exc.reason}]}, status_code=400
        )

    @app.exception_handler(InvalidConfig)
    async def invalid_config(request: Request, exc: InvalidConfig) -> JSONResponse:
        return JSONResponse(
            {"detail": str(exc), "errors": [{"field": exc.field, "message": exc.reason}]}, status_code=400
        )

    @app.exception_handler(PluginDisabled)
    @app.exception_handler(OperationUnavailable)
    async def plugin_unavailable(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.exception_handler(QuotaExceeded)
    async def over_quota(request: Request, exc: QuotaExceeded) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after), **(exc.state.headers() if exc.state else {})}
        return JSONResponse({"detail": str(exc)}, status_code=429, headers=headers)

    @app.exception_handler(JobNotFound)
    async def not_found(request: Request, exc: JobNotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(JobConflict)
    async def conflict(request: Request, exc: JobConflict) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(Unavailable)
    async def unavailable(request: Request, exc: Unavailable) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return JSONResponse({"detail": str(exc)}, status_code=503, headers=headers)

    @app.exception_handler(OzonError)
    async def ozon_failed(request: Request, exc: OzonError) -> JSONResponse:
        status, headers = ozon_error_status(exc)
        # The message names Ozon's answer, never a credential (the client scrubs them).
        log.info("ozon call failed (%s): %s", status, exc)
        return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers or None)

    @app.exception_handler(PublishRefused)
    async def publish_refused(request: Request, exc: PublishRefused) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # Answered by Starlette's outermost middleware, outside the request-id middleware: the id is
        # added here so that even this answer can be matched with its log lines. The server logs the
        # traceback (the exception is raised again after this answer).
        request_id = log_context.request_id()
        detail = "internal error" + (f"; quote request id {request_id} when reporting it" if request_id else "")
        headers = {"X-Request-ID": request_id} if request_id else None
        return JSONResponse({"detail": detail}, status_code=500, headers=headers)

    @app.exception_handler(JobStoreUnavailable)
    async def store_down(request: Request, exc: JobStoreUnavailable) -> JSONResponse:
        # The operator reads the cause in the log; callers learn only that it is temporary.
        log.warning("job store unavailable: %s", exc)
        return JSONResponse({"detail": STORE_DOWN}, status_code=503, headers={"Retry-After": "5"})
