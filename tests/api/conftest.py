"""The API tests run against both job engines: in-process, and Redis with workers in the API process.

A test that only means one engine says so with `@pytest.mark.engines("memory")`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from redis.asyncio import Redis

from capability_service.core.config import Settings
from tests.fakes.ozon_cdn import FakeCdn

ENGINES = ("memory", "redis")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "engine" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("engines")
        metafunc.parametrize("engine", marker.args if marker else ENGINES, indirect=True)


@pytest.fixture
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, Any]]:
    """Settings of the engine under test; for Redis an empty database of the test run's redis-server."""
    if request.param == "memory":
        yield {"job_backend": "memory"}
        return
    redis_url: str = request.getfixturevalue("redis_url")
    client = Redis.from_url(redis_url)
    await client.flushdb()
    await client.aclose()
    yield {"job_backend": "redis", "redis_url": redis_url, "serve_local_workers": 2, "job_heartbeat_seconds": 2}


@pytest.fixture
def make_settings(make_settings: Callable[..., Settings], engine: dict[str, Any]) -> Callable[..., Settings]:
    def factory(**overrides: Any) -> Settings:
        return make_settings(**{**engine, **overrides})

    return factory


@pytest.fixture
def cdn() -> Iterator[FakeCdn]:
    """A fake of Ozon's picture CDN on loopback."""
    with FakeCdn().running() as fake:
        yield fake
