"""Uploads that outlast a short storage outage.

A store restarting, a network blip or a 5xx burst lasts seconds; the S3 client's own retries are
over in under a second. So an upload failing with a `TransientStorageError` is tried again with
exponential backoff and full jitter (tenacity's `wait_random_exponential`, so images that failed
together do not all come back at the same instant) for up to a window of seconds, which the caller
bounds by the time its image has left. Any other `StorageError` fails at once.

One log line per burst of retries, when it ends (stored, given up or abandoned), never a traceback:
an outage across many images is one line per image, not one per attempt.
"""

from __future__ import annotations

import asyncio
import logging
import time

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_before_delay, wait_random_exponential

from capability_service.core.metrics import storage_retry, storage_upload_waiting
from capability_service.storage.base import Storage, StorageError, StoredObject, TransientStorageError

log = logging.getLogger(__name__)

# The first pause is about this long on average, each next one up to twice as long, none over MAX.
BACKOFF_SECONDS = 0.25
BACKOFF_MAX_SECONDS = 5.0


async def put_with_retry(
    storage: Storage,
    key: str,
    data: bytes,
    content_type: str,
    *,
    window: float,
    backoff: float = BACKOFF_SECONDS,
    backoff_max: float = BACKOFF_MAX_SECONDS,
) -> StoredObject:
    """`storage.put`, tried again on transient failures until `window` seconds have passed.

    No pause is started that would end past the window, so the last error comes back in time for
    the caller to report it. `window <= 0` means one attempt.
    """
    started = time.monotonic()
    first_error: list[BaseException] = []

    def before_sleep(state: RetryCallState) -> None:
        storage_retry(storage.backend)
        if not first_error:
            storage_upload_waiting(storage.backend, +1)
            error = state.outcome.exception() if state.outcome is not None else None
            first_error.append(error or TransientStorageError("unknown error"))

    retrying = AsyncRetrying(
        stop=stop_before_delay(max(window, 0.0)),
        wait=wait_random_exponential(multiplier=backoff, max=backoff_max),
        retry=retry_if_exception_type(TransientStorageError),
        before_sleep=before_sleep,
        reraise=True,
    )
    attempts = 0
    ending = "stored"
    try:
        async for attempt in retrying:
            with attempt:
                attempts += 1
                stored = await storage.put(key, data, content_type)
    except asyncio.CancelledError:
        ending = "stopped (the image was cancelled or ran out of time)"
        raise
    except StorageError as exc:
        ending = f"gave up ({exc})"
        raise
    finally:
        if first_error:
            storage_upload_waiting(storage.backend, -1)
            log.warning(
                "storing %s: %s after %d attempts over %.1f s; the first attempt failed: %s",
                key,
                ending,
                attempts,
                time.monotonic() - started,
                first_error[0],
            )
    return stored
