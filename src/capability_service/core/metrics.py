"""Every Prometheus metric the service exports, defined once, so the API, the job engine and the
providers all count into the same families without importing one another.

Multiprocess: with `PROMETHEUS_MULTIPROC_DIR` set in the environment (before the process starts),
`prometheus-client` keeps every value in memory-mapped files in that directory, and `GET /metrics`
of any process on the host adds up the API instances and workers there. Gauges say how their values
combine (`multiprocess_mode`). Without it, each process exports its own values.

Every metric has at least one label: in multiprocess mode a metric without labels writes its file the
moment it is defined, at import, before the service has checked the directory.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final, Literal

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"

# `_created` timestamps per series double the output and no dashboard here reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Image stages and HTTP answers range from milliseconds to the remote model's minutes.
STAGE_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
HTTP_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
JOB_BUCKETS: Final = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)

# --- Jobs (counted where a job closes: exactly once per job, in whichever process closes it) -----------

JOBS: Final = Counter(
    "capsvc_jobs",
    "Jobs that ended, by job type, final status (completed, failed, cancelled) and tenant.",
    ["type", "status", "tenant"],
)
JOB_DURATION: Final = Histogram(
    "capsvc_job_duration_seconds",
    "Seconds from a job's submission to its end, by job type and final status.",
    ["type", "status"],
    buckets=JOB_BUCKETS,
)

# --- Images (counted by the pipeline: once per processing run of an image) -----------------------------

ImageOutcomeLabel = Literal["succeeded", "failed", "cancelled"]
# What made an image fail; `none` for a success.
ErrorClass = Literal["none", "source", "image", "provider", "storage", "timeout", "internal", "cancelled"]
ERROR_CLASSES: Final[tuple[str, ...]] = ("source", "image", "provider", "storage", "timeout", "internal", "cancelled")

IMAGES: Final = Counter(
    "capsvc_images",
    "Image processing runs by job type, outcome (succeeded, failed, cancelled) and error class "
    "(none, source, image, provider, storage, timeout, internal, cancelled).",
    ["type", "outcome", "error"],
)
IMAGE_DURATION: Final = Histogram(
    "capsvc_image_duration_seconds",
    "Seconds one image took end to end (read, process, store), by job type and outcome.",
    ["type", "outcome"],
    buckets=STAGE_BUCKETS,
)
# fetch: reading the source; decode: decoding its pixels, where that is a step of its own; process: the
# rest of the plugin's work (waiting for a CPU worker included); encode: writing the result's bytes;
# remote_model: calls to the remote image model; store: writing the result to storage.
Stage = Literal["fetch", "decode", "process", "encode", "remote_model", "store"]
STAGES: Final[tuple[str, ...]] = ("fetch", "decode", "process", "encode", "remote_model", "store")
IMAGE_STAGE: Final = Histogram(
    "capsvc_image_stage_seconds",
    "Seconds per stage of an image that succeeded, by job type and stage "
    "(fetch, decode, process, encode, remote_model, store).",
    ["type", "stage"],
    buckets=STAGE_BUCKETS,
)
IMAGES_IN_FLIGHT: Final = Gauge(
    "capsvc_images_in_flight",
    "Images being processed now by the processes of this host, by job type.",
    ["type"],
    # Summed over the processes still alive: a stopped worker's images are no longer in flight.
    multiprocess_mode="livesum",
)

# --- Remote image model -------------------------------------------------------------------------------

# ok; rate_limited: 429; server_error: 5xx; timeout: no answer in time; unreachable: connection failed;
# rejected: any other unusable answer (4xx, refusal, no image); too_large: above AI_MAX_RESPONSE_BYTES.
RemoteResult = Literal["ok", "rate_limited", "server_error", "timeout", "unreachable", "rejected", "too_large"]
REMOTE_ATTEMPTS: Final = Counter(
    "capsvc_remote_model_attempts",
    "Requests to the remote image model by provider and result "
    "(ok, rate_limited, server_error, timeout, unreachable, rejected, too_large).",
    ["provider", "result"],
)
REMOTE_RETRIES: Final = Counter(
    "capsvc_remote_model_retries",
    "Requests to the remote image model that were retried after a failed attempt, by provider.",
    ["provider"],
)

# --- Storage -----------------------------------------------------------------------------------------

STORAGE_RETRIES: Final = Counter(
    "capsvc_storage_upload_retries",
    "Result uploads tried again after a transient storage failure (unreachable, 5xx, disk full), by backend.",
    ["backend"],
)
STORAGE_UPLOADS_WAITING: Final = Gauge(
    "capsvc_storage_uploads_waiting",
    "Result uploads of this host's processes waiting between retries for the storage to come back, by backend.",
    ["backend"],
    multiprocess_mode="livesum",
)

# --- Result cache ----------------------------------------------------------------------------------

CacheResult = Literal["hit", "miss"]
RESULT_CACHE: Final = Counter(
    "capsvc_result_cache",
    "Result cache look-ups of images by result (hit: a stored result was reused; miss: processed).",
    ["result"],
)

# --- HTTP --------------------------------------------------------------------------------------------

HTTP_REQUESTS: Final = Counter(
    "capsvc_http_requests",
    "HTTP requests by method, route template and status code.",
    ["method", "route", "status"],
)
HTTP_DURATION: Final = Histogram(
    "capsvc_http_request_duration_seconds",
    "Seconds from a request's arrival to the end of its answer's headers, by method and route template.",
    ["method", "route"],
    buckets=HTTP_BUCKETS,
)

# The families a scrape reads from the job engine at that moment (see `EngineStatsCollector`).
ENGINE_GAUGES: Final[Mapping[str, tuple[str, str]]] = {
    # name: (key in the engine's stats, help)
    "capsvc_jobs_queued": ("queued", "In-process engine: jobs accepted and not started yet, in this process."),
    "capsvc_images_queued": ("queued_images", "Redis engine: images waiting for a worker, whole cluster."),
    "capsvc_images_active": ("active_images", "Redis engine: images workers are processing, whole cluster."),
    "capsvc_workers": ("workers", "Redis engine: workers connected to the queue."),
}


def storage_retry(backend: str) -> None:
    """Count one upload about to be tried again (`capsvc_storage_upload_retries_total{backend}`)."""
    STORAGE_RETRIES.labels(backend=backend).inc()


def storage_in_use(backend: str) -> None:
    """Export the storage families at zero from the start: a dashboard's `rate()` and an alert on them
    then have a series before the first retry ever happens."""
    STORAGE_RETRIES.labels(backend=backend)
    STORAGE_UPLOADS_WAITING.labels(backend=backend)


def storage_upload_waiting(backend: str, change: int) -> None:
    """An upload starts (+1) or ends (-1) a burst of retries (`capsvc_storage_uploads_waiting{backend}`)."""
    STORAGE_UPLOADS_WAITING.labels(backend=backend).inc(change)


def cache_lookup(result: CacheResult) -> None:
    """Count one result cache look-up (`capsvc_result_cache_total{result}`)."""
    RESULT_CACHE.labels(result=result).inc()


def job_closed(job_type: str, status: str, tenant: str, seconds: float | None) -> None:
    """Count one job reaching its final status; call exactly once per job, where it closes."""
    JOBS.labels(type=job_type, status=status, tenant=tenant).inc()
    if seconds is not None and seconds >= 0:
        JOB_DURATION.labels(type=job_type, status=status).observe(seconds)


class EngineStatsCollector(Collector):
    """Gauges read from the job engine's `stats()` at scrape time (queue depth, running work, workers).

    Only the keys the engine reports have a value: the in-process engine has no workers, the Redis one
    no per-process job queue.
    """

    def __init__(self, stats: Callable[[], Mapping[str, Any]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats = self._stats()
        engine = str(stats.get("engine", "unknown"))
        for name, (key, help_text) in ENGINE_GAUGES.items():
            family = GaugeMetricFamily(name, help_text, labels=["engine"])
            value = stats.get(key)
            # Declared either way, so every process exports the same families; valued where they apply.
            if isinstance(value, int | float) and not isinstance(value, bool):
                family.add_metric([engine], float(value))
            yield family


class _Forward(Collector):
    """The metrics of another registry, for combining it with per-app collectors in one scrape."""

    def __init__(self, source: CollectorRegistry) -> None:
        self._source = source

    def collect(self) -> Iterable[Any]:
        return self._source.collect()


def multiprocess_dir() -> Path | None:
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


def prepare_multiprocess_dir() -> Path | None:
    """Create the multiprocess directory if it is configured and missing; returns it (None when off)."""
    directory = multiprocess_dir()
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
    return directory


def process_exiting() -> None:
    """Drop this process's live gauges from the multiprocess directory (its images are no longer in flight)."""
    directory = multiprocess_dir()
    if directory is not None and directory.is_dir():
        multiprocess.mark_process_dead(os.getpid(), str(directory))  # type: ignore[no-untyped-call]


def build_registry(*collectors: Collector) -> CollectorRegistry:
    """What one scrape exports: every process of the host in multiprocess mode, else this process;
    plus `collectors` (read at scrape time)."""
    registry = CollectorRegistry(auto_describe=False)
    directory = multiprocess_dir()
    if directory is not None:
        multiprocess.MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    else:
        registry.register(_Forward(REGISTRY))
    for collector in collectors:
        registry.register(collector)
    return registry


def render(registry: CollectorRegistry, accept: str | None = None) -> tuple[bytes, str]:
    """`registry` in the format the scraper's `Accept` header asks for (OpenMetrics or Prometheus
    text; text 0.0.4 without one); returns the body and its content type."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
