"""Where CPU-bound image work runs: a thread pool (default) or a process pool, never the event loop.

libvips releases the GIL while it computes, so threads use every core without copying image bytes
between processes; `benchmarks/bench_executor.py` measures both on real photos.
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Literal, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class CpuExecutor:
    def __init__(self, kind: Literal["thread", "process"], workers: int) -> None:
        self.kind = kind
        self.workers = workers
        self._pool: Executor
        if kind == "process":
            # forkserver: children never inherit the parent's libvips threads or event loop.
            context = multiprocessing.get_context("forkserver")
            self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
        else:
            self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cpu")

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def shutdown(self) -> None:
        # Steps already started finish in the background; nothing new starts.
        self._pool.shutdown(wait=False, cancel_futures=True)
