"""What one image's processing run tells the metrics: its outcome, error class and stage timings.

The pipeline times what it does itself (fetch, the plugin call, store); the plugin's result says how
much of its call went to decoding, encoding and the remote model (`metadata["timings"]`, in ms), and
the rest of the call is the `process` stage. Stage timings are observed for images that succeeded;
failures are counted by error class.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from capability_service.core import metrics
from capability_service.core.metrics import ErrorClass, ImageOutcomeLabel, Stage

# metadata["timings"] keys -> the stage they measure.
PLUGIN_STAGES: Mapping[str, Stage] = {"decode_ms": "decode", "encode_ms": "encode", "remote_ms": "remote_model"}


def count_image(job_type: str, outcome: ImageOutcomeLabel, error: ErrorClass = "none") -> None:
    """Count one processing run of an image that ended without going through `ImageRun`."""
    metrics.IMAGES.labels(type=job_type, outcome=outcome, error=error).inc()


class ImageRun:
    """Collects one image run's stage timings and reports them once, with its outcome."""

    def __init__(self, job_type: str) -> None:
        self.job_type = job_type
        self.stages: dict[Stage, float] = {}
        self._started = time.perf_counter()
        self._in_flight = metrics.IMAGES_IN_FLIGHT.labels(type=job_type)
        self._done = False

    @contextmanager
    def in_flight(self) -> Iterator[None]:
        self._in_flight.inc()
        try:
            yield
        finally:
            self._in_flight.dec()

    @contextmanager
    def stage(self, name: Stage) -> Iterator[None]:
        """Time the block as `name` (kept only if the block completes)."""
        started = time.perf_counter()
        yield
        self.stages[name] = time.perf_counter() - started

    def plugin_call(self, seconds: float, metadata: Mapping[str, Any]) -> None:
        """Split the plugin call's `seconds` into the stages its result's timings name, the rest `process`."""
        timings = metadata.get("timings")
        inside = 0.0
        if isinstance(timings, Mapping):
            for key, stage in PLUGIN_STAGES.items():
                value = timings.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
                    self.stages[stage] = value / 1000
                    inside += value / 1000
        self.stages["process"] = max(0.0, seconds - inside)

    def finish(self, outcome: ImageOutcomeLabel, error: ErrorClass = "none") -> None:
        """Report the run; only the first call counts."""
        if self._done:
            return
        self._done = True
        count_image(self.job_type, outcome, error)
        metrics.IMAGE_DURATION.labels(type=self.job_type, outcome=outcome).observe(time.perf_counter() - self._started)
        if outcome == "succeeded":
            for stage, seconds in self.stages.items():
                metrics.IMAGE_STAGE.labels(type=self.job_type, stage=stage).observe(seconds)
