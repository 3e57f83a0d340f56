"""Fair share: the tenants' windows (in memory and in Redis, one contract) and the CPU gate."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from capability_service.jobs.fair import FairGate, FairQueue, MemoryFairQueue, Released, share_window
from capability_service.jobs.memory import MemoryJobStore
from capability_service.jobs.models import Job, JobStatus
from capability_service.jobs.redis_fair import RedisFairQueue
from capability_service.jobs.redis_store import RedisJobStore
from capability_service.jobs.store import JobStore
from tests.jobs.samples import make_job

CAPACITY = 4


def test_a_tenants_window_is_its_share_of_the_slots() -> None:
    assert share_window(8, 1) == 8
    assert share_window(8, 2) == 4
    assert share_window(8, 3) == 3
    assert share_window(8, 100) == 1
    assert share_window(8, 1, cap=3) == 3


@pytest.fixture(params=["memory", "redis"])
async def fair(request: pytest.FixtureRequest) -> AsyncIterator[tuple[FairQueue, JobStore]]:
    if request.param == "memory":
        memory = MemoryJobStore(ttl_seconds=60, max_jobs=100)

        async def is_live(key: str) -> bool:
            return not await memory.cancel_requested(key)

        yield MemoryFairQueue(CAPACITY, is_live), memory
        return
    redis_url: str = request.getfixturevalue("redis_url")
    flush = Redis.from_url(redis_url)
    await flush.flushdb()
    await flush.aclose()
    store = RedisJobStore(redis_url, ttl_seconds=60)

    async def capacity() -> int:
        return CAPACITY

    yield RedisFairQueue(store.redis, capacity), store
    await store.close()


async def stored_and_waiting(fair: tuple[FairQueue, JobStore], *jobs: Job) -> None:
    queue, store = fair
    for job in jobs:
        await store.create(job)
        await queue.add(job)


async def test_a_big_job_holds_only_its_window_and_a_small_one_gets_in(fair: tuple[FairQueue, JobStore]) -> None:
    queue, store = fair
    big, small = make_job(20, tenant="shop-a"), make_job(1, tenant="shop-b")
    await store.create(small)
    await stored_and_waiting(fair, big)
    # Alone, shop A may fill every slot.
    first = await queue.release("shop-a")
    assert [item.index for item in first] == list(range(CAPACITY))
    assert await queue.release("shop-a") == []
    # Shop B's image is released at once, though shop A fills the slots.
    await queue.add(small)
    assert await queue.release("shop-b") == [Released("shop-b", small.key, 0)]
    assert await queue.waiting_images() == 20 - CAPACITY
    # With two tenants at work, shop A gets a new place only once it is below its share.
    for item in first[:2]:
        await queue.done(item)
    assert await queue.release("shop-a") == []
    await queue.done(first[2])
    assert await queue.release("shop-a") == [Released("shop-a", big.key, CAPACITY)]


async def test_jobs_of_a_tenant_go_oldest_first_and_finished_jobs_are_skipped(
    fair: tuple[FairQueue, JobStore],
) -> None:
    queue, store = fair
    first, cancelled, last = (make_job(2, tenant="shop-a") for _ in range(3))
    await stored_and_waiting(fair, first, cancelled, last)
    await store.finish(cancelled.key, JobStatus.cancelled)
    released = await queue.release("shop-a")
    assert [(item.key, item.index) for item in released] == [
        (first.key, 0),
        (first.key, 1),
        (last.key, 0),
        (last.key, 1),
    ]
    assert await queue.waiting_jobs() == 0
    assert await queue.waiting_images() == 0


async def test_forgetting_a_job_frees_its_window(fair: tuple[FairQueue, JobStore]) -> None:
    queue, _store = fair
    doomed, next_job = make_job(10, tenant="shop-a"), make_job(3, tenant="shop-a")
    await stored_and_waiting(fair, doomed, next_job)
    released = await queue.release("shop-a")
    assert {item.key for item in released} == {doomed.key}
    gone = await queue.forget(doomed)
    assert sorted(item.index for item in gone) == [item.index for item in released]
    assert [item.key for item in await queue.release("shop-a")] == [next_job.key] * 3
    assert await queue.waiting_images() == 0


async def test_the_cpu_gate_serves_waiting_tenants_in_turn() -> None:
    gate = FairGate(1)
    order: list[str] = []
    hold = asyncio.Event()

    async def work(tenant: str, name: str, wait: bool = False) -> None:
        async with gate.slot(tenant):
            order.append(name)
            if wait:
                await hold.wait()

    holder = asyncio.create_task(work("a", "a0", wait=True))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(work(t, n)) for t, n in (("a", "a1"), ("a", "a2"), ("a", "a3"), ("b", "b1"))]
    await asyncio.sleep(0)
    hold.set()
    await asyncio.gather(holder, *waiting)
    # Shop B's one piece of work goes second, not after all of shop A's.
    assert order == ["a0", "a1", "b1", "a2", "a3"]


async def test_a_free_thread_goes_to_the_tenant_holding_the_fewest() -> None:
    gate = FairGate(2)
    order: list[str] = []
    release = {name: asyncio.Event() for name in ("a0", "a1", "a2", "b1")}

    async def work(tenant: str, name: str) -> None:
        async with gate.slot(tenant):
            order.append(name)
            await release[name].wait()

    holders = [asyncio.create_task(work("a", "a0")), asyncio.create_task(work("a", "a1"))]
    await asyncio.sleep(0)
    # Shop A waits first, shop B after it; shop A holds both threads.
    waiting = [asyncio.create_task(work("a", "a2")), asyncio.create_task(work("b", "b1"))]
    await asyncio.sleep(0)
    release["a0"].set()
    await holders[0]
    assert order == ["a0", "a1", "b1"]
    for event in release.values():
        event.set()
    await asyncio.gather(*holders, *waiting)
    assert order == ["a0", "a1", "b1", "a2"]


async def test_a_waiter_that_gives_up_passes_its_turn_on() -> None:
    gate = FairGate(1)
    hold = asyncio.Event()
    done: list[str] = []

    async def work(tenant: str, wait: bool = False) -> None:
        async with gate.slot(tenant):
            if wait:
                await hold.wait()
            done.append(tenant)

    holder = asyncio.create_task(work("a", wait=True))
    await asyncio.sleep(0)
    quitter = asyncio.create_task(work("b"))
    stayer = asyncio.create_task(work("c"))
    await asyncio.sleep(0)
    quitter.cancel()
    hold.set()
    await asyncio.gather(holder, stayer)
    assert done == ["a", "c"]
    # The slot is free again for whoever comes next.
    await asyncio.wait_for(work("d"), 1)
