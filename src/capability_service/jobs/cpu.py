"""Where CPU-bound image work runs: a thread pool (default) or a process pool, never the event loop.

libvips releases the GIL while it computes, so threads use every core without copying image bytes
between processes; `benchmarks/bench_executor.py` measured the same throughput for both and about 60%
more memory for processes.

Image work runs at a lower CPU priority (`CPU_NICE`): on a busy machine the event loop then gets a
core at once to answer status requests and stream progress, while on an idle one the niceness costs
nothing. `benchmarks/bench_responsiveness.py` measured status p99 fall from ~90 ms to ~11 ms with it.
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Literal, ParamSpec, TypeVar

from capability_service.core.allocator import tune_allocator
from capability_service.imaging.threads import one_thread_per_call
from capability_service.jobs.fair import FairGate

P = ParamSpec("P")
T = TypeVar("T")


def _lower_thread_priority(nice: int) -> None:
    # On Linux a thread has its own nice value, and the threads libvips starts from it inherit it.
    if nice and sys.platform == "linux":
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


def _start_pool_process(nice: int) -> None:
    # A pool process is a process start of its own, decoding the same large images as the service.
    tune_allocator()
    one_thread_per_call()
    if nice:
        os.nice(nice)


class CpuExecutor:
    def __init__(self, kind: Literal["thread", "process"], workers: int, nice: int = 0) -> None:
        self.kind = kind
        self.workers = workers
        self._pool: Executor
        if kind == "process":
            # forkserver: children never inherit the parent's libvips threads or event loop.
            context = multiprocessing.get_context("forkserver")
            self._pool = ProcessPoolExecutor(
                max_workers=workers, mp_context=context, initializer=_start_pool_process, initargs=(nice,)
            )
        else:
            # The pool is the parallelism: one step per worker, each single-threaded inside the libraries.
            one_thread_per_call()
            self._pool = ThreadPoolExecutor(
                max_workers=workers, thread_name_prefix="cpu", initializer=_lower_thread_priority, initargs=(nice,)
            )
        # As many steps in the pool as it has workers; the rest wait here, served tenant by tenant.
        self.gate = FairGate(workers)

    def for_tenant(self, tenant: str) -> TenantCpu:
        """A runner whose work waits its turn among the tenants (see `jobs.fair.FairGate`)."""
        return TenantCpu(self, tenant)

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def shutdown(self) -> None:
        """Start nothing new; steps already started finish in the background."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def close(self) -> None:
        """Start nothing new and wait for the workers to exit.

        Worker processes must be told to exit before this process ends: the server ends it by
        re-raising SIGTERM, which skips the exit handlers that would otherwise stop them, and they
        would live on as orphans.
        """
        if self.kind == "process":
            await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)
        else:
            self.shutdown()


class TenantCpu:
    """Runs one tenant's image work on the pool, after the tenants waiting before it had their turn."""

    def __init__(self, cpu: CpuExecutor, tenant: str) -> None:
        self.cpu = cpu
        self.tenant = tenant

    async def __call__(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        async with self.cpu.gate.slot(self.tenant):
            return await self.cpu.run(fn, *args, **kwargs)
