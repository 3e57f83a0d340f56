"""Runs work items through a plugin in this process: the service's plugins on the service's CPU executor.

Per image: skip when the output exists (unless overwriting), read the source through the service's
`SourceFetcher` (URLs under the `SOURCE_*` policy; local files the user named are read directly), run
the plugin, write the result atomically. One image's failure is its own: the others go on.

Stopping: `stop()` (the first Ctrl-C) starts no new image and lets the ones in progress finish and be
written; cancelling `run` (a second Ctrl-C) abandons them. A result file is written under a temporary
name and renamed into place, so every file in the output folder is complete whatever stops the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from capability_service.batch.inputs import WorkItem
from capability_service.batch.options import Operation
from capability_service.core.config import Settings
from capability_service.imaging.types import ImageError
from capability_service.jobs.cpu import CpuExecutor
from capability_service.plugins.base import ProcessContext
from capability_service.providers.base import ProviderError
from capability_service.sources.errors import SourceError
from capability_service.sources.fetch import SourceFetcher

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


class ItemStatus(StrEnum):
    done = "done"  # processed and written
    skipped = "skipped"  # its output already existed (no --overwrite)
    failed = "failed"  # this image has an error; the others are unaffected
    stopped = "stopped"  # the run was stopped before this image was processed


@dataclass(frozen=True, slots=True)
class ItemResult:
    item: WorkItem
    status: ItemStatus
    error: str | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    width: int | None = None
    height: int | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "input": self.item.name,
            "output": str(self.item.output),
            "status": self.status.value,
            "error": self.error,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "width": self.width,
            "height": self.height,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class BatchReport:
    """What a run did, item by item, in the order of the plan."""

    results: list[ItemResult] = field(default_factory=list)
    seconds: float = 0.0
    # CPU time of this process (every thread) during the run: what the images cost, whatever else the
    # machine was doing.
    cpu_seconds: float = 0.0
    # True when the run was stopped (Ctrl-C) before every item had its turn.
    interrupted: bool = False

    def count(self, status: ItemStatus) -> int:
        return sum(1 for result in self.results if result.status is status)

    def of(self, status: ItemStatus) -> list[ItemResult]:
        return [result for result in self.results if result.status is status]

    @property
    def bytes_in(self) -> int:
        return sum(result.bytes_in for result in self.results if result.status is ItemStatus.done)

    @property
    def bytes_out(self) -> int:
        return sum(result.bytes_out for result in self.results if result.status is ItemStatus.done)

    @property
    def ok(self) -> bool:
        """True when every image is done or was already done (skipped), and the run was not stopped."""
        return not self.interrupted and all(
            result.status in (ItemStatus.done, ItemStatus.skipped) for result in self.results
        )

    @property
    def images_per_second(self) -> float:
        done = self.count(ItemStatus.done)
        return done / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "interrupted": self.interrupted,
            "seconds": round(self.seconds, 3),
            "cpu_seconds": round(self.cpu_seconds, 3),
            "images_per_second": round(self.images_per_second, 3),
            "counts": {status.value: self.count(status) for status in ItemStatus},
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "items": [result.as_dict() for result in self.results],
        }


def write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` under a temporary name in the same folder, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    # Created like any new file (0666 less the umask), unlike mkstemp's private 0600.
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


class _Stopped(Exception):
    """The run is stopping and this image had not begun its CPU work."""


Listener = Callable[[ItemResult], None]


class BatchRunner:
    """Processes work items with one operation, `workers` images at once on the CPU."""

    def __init__(
        self,
        settings: Settings,
        operation: Operation,
        *,
        workers: int,
        overwrite: bool = False,
    ) -> None:
        self.settings = settings
        self.operation = operation
        self.workers = workers
        self.overwrite = overwrite
        # Images in flight: enough to keep every CPU worker busy while others wait on downloads or a
        # remote model, as the service's MAX_IMAGES_IN_FLIGHT does; each holds only its source bytes.
        self.in_flight = max(workers, settings.max_images_in_flight)
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Start no new image; the ones in progress finish and are written."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def run(
        self,
        items: Sequence[WorkItem],
        on_result: Listener | None = None,
        on_start: Callable[[int], None] | None = None,
    ) -> BatchReport:
        """Process `items`; cancelling this coroutine abandons images in progress and returns what finished.

        Items whose output exists are skipped first (unless overwriting); `on_start` is then told how
        many images will be processed, and `on_result` hears of each as it finishes.
        """
        started, cpu_started = time.perf_counter(), time.process_time()
        results: dict[int, ItemResult] = {}
        exists = await asyncio.to_thread(lambda: [not self.overwrite and item.output.exists() for item in items])
        for index, item in enumerate(items):
            if exists[index]:
                results[index] = ItemResult(item, ItemStatus.skipped)
        todo = [(index, item) for index, item in enumerate(items) if not exists[index]]
        if on_start is not None:
            on_start(len(todo))

        fetcher = SourceFetcher.from_settings(self.settings.model_copy(update={"source_local_root": Path("/")}))
        cpu = CpuExecutor(self.settings.cpu_executor, self.workers, nice=self.settings.cpu_nice)
        queue = iter(todo)
        report = BatchReport()

        async def read_source(url: str) -> bytes:
            # Extra inputs a config names (backgroundImageUrl) are read under the same policy as sources.
            return (await fetcher.fetch(url)).data

        # Images in flight wait here for a CPU worker rather than in the pool's queue, so that a stop
        # lets the images already on the CPU finish while those still waiting never start.
        cpu_slots = asyncio.Semaphore(self.workers)

        def context() -> ProcessContext:
            began = False

            async def run_cpu(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
                nonlocal began
                async with cpu_slots:
                    if self._stopping.is_set() and not began:
                        raise _Stopped
                    began = True
                    return await cpu.run(fn, *args, **kwargs)

            return ProcessContext(run_cpu=run_cpu, read_source=read_source)

        async def work() -> None:
            for index, item in queue:
                if self._stopping.is_set():
                    return
                result = await self._one(item, fetcher, context())
                results[index] = result
                if on_result is not None:
                    on_result(result)

        workers = [asyncio.create_task(work(), name=f"batch-{n}") for n in range(min(self.in_flight, len(todo)))]
        try:
            await asyncio.gather(*workers)
        except asyncio.CancelledError:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        finally:
            cpu.shutdown()
            await fetcher.close()
        report.seconds = time.perf_counter() - started
        report.cpu_seconds = time.process_time() - cpu_started
        report.results = [results.get(i) or ItemResult(item, ItemStatus.stopped) for i, item in enumerate(items)]
        report.interrupted = any(result.status is ItemStatus.stopped for result in report.results)
        return report

    async def _one(self, item: WorkItem, fetcher: SourceFetcher, ctx: ProcessContext) -> ItemResult:
        started = time.perf_counter()
        operation = self.operation
        limit = self.settings.image_timeout_seconds
        try:
            async with asyncio.timeout(limit):
                source = (await fetcher.fetch(item.source)).data
                result = await operation.plugin.process(operation.job_type, operation.config, source, ctx)
            await asyncio.to_thread(write_atomically, item.output, result.data)
        except TimeoutError:
            return self._failed(item, f"processing took longer than {limit:.0f} s", started)
        except _Stopped:
            return ItemResult(item, ItemStatus.stopped)
        except SourceError as exc:
            return self._failed(item, f"could not read the source: {exc}", started)
        except (ImageError, ProviderError) as exc:
            return self._failed(item, str(exc), started)
        except OSError as exc:
            return self._failed(item, f"could not write {item.output}: {exc.strerror or exc}", started)
        except Exception:
            # A bug, not bad input: keep going with the other images and log the trace.
            log.exception("unexpected error on %s", item.name)
            return self._failed(item, "internal error while processing this image", started)
        return ItemResult(
            item,
            ItemStatus.done,
            bytes_in=len(source),
            bytes_out=len(result.data),
            width=result.width,
            height=result.height,
            seconds=time.perf_counter() - started,
        )

    @staticmethod
    def _failed(item: WorkItem, message: str, started: float) -> ItemResult:
        return ItemResult(item, ItemStatus.failed, error=message, seconds=time.perf_counter() - started)
