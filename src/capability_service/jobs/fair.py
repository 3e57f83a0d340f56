"""Fair share between tenants: which images of which jobs may run next, and whose CPU work goes first.

Each tenant has a window of images queued or running at once: its share of the engine's capacity
(`share_window`: the image slots divided among the tenants with work), never more than
`TENANT_MAX_IMAGES_IN_FLIGHT` when that is set. The rest of its jobs' images wait here, oldest job
first, and are released one by one as its images finish. Both engines queue only released images, in
order, so a tenant with a 1,000-image job has at most its share ahead of another tenant's one-image
job: a tenant that arrives gets its first image started at once in the memory engine, and queued
first in the Redis engine, while the tenants already at work give back their places as their images
finish. Inside a process, `FairGate` then hands each free CPU thread to the waiting tenant that holds
the fewest.

`MemoryFairQueue` holds the windows in the process for the in-process engine;
`redis_fair.RedisFairQueue` keeps the same state in Redis, changed by Lua scripts, for every API
instance and worker.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

from capability_service.jobs.models import Job


def share_window(capacity: int, tenants: int, cap: int = 0) -> int:
    """A tenant's window: its share of `capacity` image slots among `tenants` (at least one image)."""
    window = max(1, math.ceil(capacity / max(1, tenants)))
    return min(window, cap) if cap > 0 else window


@dataclass(frozen=True, slots=True)
class Released:
    """One image allowed to run: queue it now."""

    tenant: str
    key: str
    index: int


class FairQueue(Protocol):
    async def add(self, job: Job) -> None:
        """Let the job's images wait for their tenant's window (oldest job first)."""
        ...

    async def release(self, tenant: str) -> list[Released]:
        """Take the tenant's next images while its window has room; the caller queues them in order."""
        ...

    async def done(self, item: Released) -> None:
        """A released image is final (or will never run): its place in the window is free."""
        ...

    async def forget(self, job: Job) -> list[Released]:
        """Drop a job (cancelled): its waiting images go, its released ones leave the window and are returned."""
        ...

    async def waiting_jobs(self) -> int:
        """Jobs with images not yet released, over all tenants."""
        ...

    async def waiting_images(self) -> int:
        """Images not yet released, over all tenants."""
        ...


@dataclass(frozen=True, slots=True)
class _Waiting:
    key: str
    total: int


@dataclass
class _TenantLine:
    jobs: deque[_Waiting] = field(default_factory=deque)
    # The next image index to release, per job key.
    next_index: dict[str, int] = field(default_factory=dict)
    # Released images not final yet, with the time they were released.
    in_flight: dict[tuple[str, int], float] = field(default_factory=dict)


class MemoryFairQueue:
    """`FairQueue` of the in-process engine. Safe without locks: every method runs on the event loop."""

    def __init__(self, capacity: int, is_live: JobLiveness, tenant_cap: int = 0) -> None:
        self.capacity = capacity
        self.tenant_cap = tenant_cap
        self._is_live = is_live
        self._lines: defaultdict[str, _TenantLine] = defaultdict(_TenantLine)

    async def add(self, job: Job) -> None:
        line = self._lines[job.tenant]
        line.jobs.append(_Waiting(job.key, job.total))
        line.next_index[job.key] = 0

    async def release(self, tenant: str) -> list[Released]:
        line = self._lines.get(tenant)
        if line is None:
            return []
        released: list[Released] = []
        window = share_window(self.capacity, len(self._lines), self.tenant_cap)
        while line.jobs and len(line.in_flight) < window:
            job = line.jobs[0]
            index = line.next_index[job.key]
            if index >= job.total or not await self._is_live(job.key):
                line.jobs.popleft()
                del line.next_index[job.key]
                continue
            line.next_index[job.key] = index + 1
            line.in_flight[(job.key, index)] = time.monotonic()
            released.append(Released(tenant, job.key, index))
            if index + 1 >= job.total:
                # Every image of the job is out: it no longer waits.
                line.jobs.popleft()
                del line.next_index[job.key]
        self._drop_if_empty(tenant)
        return released

    async def done(self, item: Released) -> None:
        line = self._lines.get(item.tenant)
        if line is not None:
            line.in_flight.pop((item.key, item.index), None)
            self._drop_if_empty(item.tenant)

    async def forget(self, job: Job) -> list[Released]:
        line = self._lines.get(job.tenant)
        if line is None:
            return []
        line.jobs = deque(waiting for waiting in line.jobs if waiting.key != job.key)
        line.next_index.pop(job.key, None)
        gone = [Released(job.tenant, key, index) for (key, index) in line.in_flight if key == job.key]
        for item in gone:
            del line.in_flight[(item.key, item.index)]
        self._drop_if_empty(job.tenant)
        return gone

    async def waiting_jobs(self) -> int:
        return sum(len(line.jobs) for line in self._lines.values())

    async def waiting_images(self) -> int:
        return sum(job.total - line.next_index.get(job.key, 0) for line in self._lines.values() for job in line.jobs)

    def in_flight(self) -> int:
        """Released images not final yet, over all tenants."""
        return sum(len(line.in_flight) for line in self._lines.values())

    def _drop_if_empty(self, tenant: str) -> None:
        line = self._lines.get(tenant)
        if line is not None and not line.jobs and not line.in_flight:
            del self._lines[tenant]


class JobLiveness(Protocol):
    """Whether a job still wants its images run (not final, not cancelled)."""

    async def __call__(self, key: str) -> bool: ...


class FairGate:
    """At most `slots` holders at once; a freed slot goes to the waiting tenant that holds the fewest.

    Image work of a process goes through it on its way to the CPU pool: without it the pool's own queue
    would serve one tenant's dozens of waiting images before another tenant's single one, and with plain
    turns a tenant already holding every thread would still get the next one before a newcomer.
    """

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._held: Counter[str] = Counter()
        self._waiters: dict[str, deque[asyncio.Future[None]]] = {}
        # Tenants with waiters, in the order they started waiting (ties on `_held` go to the first).
        self._turns: deque[str] = deque()

    @asynccontextmanager
    async def slot(self, tenant: str) -> AsyncIterator[None]:
        if self._free > 0 and not self._turns:
            self._free -= 1
        else:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            if tenant not in self._waiters:
                self._waiters[tenant] = deque()
                self._turns.append(tenant)
            self._waiters[tenant].append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    # The slot was handed over just as the waiter gave up: pass it on.
                    self._hand_over()
                else:
                    self._forget(tenant, waiter)
                raise
        self._held[tenant] += 1
        try:
            yield
        finally:
            self._held[tenant] -= 1
            if not self._held[tenant]:
                del self._held[tenant]
            self._hand_over()

    def _hand_over(self) -> None:
        while self._turns:
            tenant = min(self._turns, key=lambda name: self._held[name])
            waiters = self._waiters[tenant]
            waiter = waiters.popleft()
            self._turns.remove(tenant)
            if waiters:
                self._turns.append(tenant)
            else:
                del self._waiters[tenant]
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1

    def _forget(self, tenant: str, waiter: asyncio.Future[None]) -> None:
        waiters = self._waiters.get(tenant)
        if waiters is None or waiter not in waiters:
            return
        waiters.remove(waiter)
        if not waiters:
            del self._waiters[tenant]
            self._turns.remove(tenant)
