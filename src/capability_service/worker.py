"""`capability-service worker`: process image tasks of the Redis job mode until SIGTERM or SIGINT.

Run as many as the machines allow, each against the same `REDIS_URL` and storage as the API
instances. The first SIGTERM (or Ctrl-C) stops taking images and lets the running ones finish within
`SHUTDOWN_GRACE_SECONDS`; images still running then go back to the queue for another worker.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from capability_service.core import metrics
from capability_service.core.allocator import tune_allocator
from capability_service.core.config import Settings
from capability_service.core.logging import configure_logging
from capability_service.jobs.distributed import RedisDispatcher
from capability_service.services import build_services

log = logging.getLogger(__name__)


async def serve_worker(settings: Settings, concurrency: int, stop: asyncio.Event | None = None) -> None:
    """Run one worker process's image worker until `stop` is set (or a termination signal arrives)."""
    services = build_services(settings)
    dispatcher = services.dispatcher
    if not isinstance(dispatcher, RedisDispatcher):
        raise TypeError("the worker needs JOB_BACKEND=redis")
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    worker = dispatcher.worker(concurrency)
    try:
        await worker.start()
        log.info("worker on Redis at %s; stop with SIGTERM", dispatcher.store.where)
        await stop.wait()
        log.info("stopping: finishing the images in progress (up to %.0f s)", settings.shutdown_grace_seconds)
        await worker.stop()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        # The dispatcher was never started here (no API): shutting it down only closes its queue.
        await services.stop()


def run_worker(settings: Settings, concurrency: int | None = None) -> int:
    """Entry point of the `worker` command; returns the process exit code."""
    configure_logging(settings.log_level, settings.log_format, settings.secret_values())
    if settings.job_backend != "redis":
        print(
            "capability-service worker: workers need JOB_BACKEND=redis (and REDIS_URL); "
            "in the default memory mode `serve` runs the jobs itself",
            file=sys.stderr,
        )
        return 2
    tune_allocator()
    metrics.prepare_multiprocess_dir()
    try:
        asyncio.run(serve_worker(settings, concurrency or settings.worker_concurrency))
    finally:
        metrics.process_exiting()
    return 0
