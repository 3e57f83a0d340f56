"""In-process fan-out of job snapshots to subscribers (SSE streams, waiting engines)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import TypeVar

from capability_service.jobs.models import Job

K = TypeVar("K")
V = TypeVar("V")

# A subscriber that falls this far behind loses its oldest snapshots; each snapshot is a full state,
# so only intermediate progress is skipped, never the final state.
SUBSCRIBER_BACKLOG = 64


def discard_from(groups: MutableMapping[K, set[V]], key: K, item: V) -> None:
    """Remove `item` from the set under `key`, and the key itself once its set is empty."""
    members = groups.get(key)
    if members is not None:
        members.discard(item)
        if not members:
            del groups[key]


class EventHub:
    def __init__(self) -> None:
        self._subscribers: dict[str, set[asyncio.Queue[Job]]] = defaultdict(set)

    def publish(self, key: str, job: Job) -> None:
        for queue in self._subscribers.get(key, ()):
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(job)

    @asynccontextmanager
    async def subscribe(self, key: str) -> AsyncIterator[AsyncIterator[Job]]:
        queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=SUBSCRIBER_BACKLOG)
        self._subscribers[key].add(queue)

        async def snapshots() -> AsyncIterator[Job]:
            while True:
                yield await queue.get()

        try:
            yield snapshots()
        finally:
            # A disconnected client leaves nothing behind.
            discard_from(self._subscribers, key, queue)

    def subscriber_count(self, key: str | None = None) -> int:
        if key is not None:
            return len(self._subscribers.get(key, ()))
        return sum(len(queues) for queues in self._subscribers.values())
