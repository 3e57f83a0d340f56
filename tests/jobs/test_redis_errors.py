"""A Redis that answers with an error (here: out of memory) is a 503 to callers, never a 500."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from capability_service.jobs.redis_store import RedisJobStore
from capability_service.jobs.store import JobStoreUnavailable
from tests.api.helpers import submit
from tests.jobs.samples import make_job
from tests.support.servers import redis_server, required


@pytest.fixture
def full_redis() -> Any:
    with required(redis_server(), "redis-server") as url:
        client = redis.Redis.from_url(url)
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", 1)
        yield url
        client.close()


async def test_an_out_of_memory_redis_is_unavailable_not_an_error(full_redis: str) -> None:
    store = RedisJobStore(full_redis, ttl_seconds=60)
    job = make_job(1)
    try:
        with pytest.raises(JobStoreUnavailable, match="refused"):
            await store.create(job)
    finally:
        await store.close()


async def test_submit_to_an_out_of_memory_redis_is_503(full_redis: str, make_client: Callable[..., Any]) -> None:
    client = await make_client(job_backend="redis", redis_url=full_redis)
    response = await submit(client, type="batch_optimization", source_image_urls=["data:,"])
    assert response.status_code == 503
    assert "Retry-After" in response.headers
