"""Shared fixtures: settings, the ASGI app with its lifespan, real images, real servers."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from capability_service.core.config import Settings
from capability_service.main import create_app
from tests.support.data import API_KEY, DATA
from tests.support.servers import redis_server, required

# The app's own shutdown steps are bounded (grace period plus `services.STOP_STEP_SECONDS` each).
STOP_LIMIT_SECONDS = 180.0


@pytest.fixture
def data_dir() -> Path:
    return DATA


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings isolated from the developer's environment and `.env`, with a temp storage dir."""

    def factory(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "api_keys": [API_KEY],
            "local_storage_dir": tmp_path / "results",
            "public_base_url": "http://testserver",
            "plugins_config": tmp_path / "no-plugins.yaml",
            "source_allow_private_networks": True,
            "cpu_workers": 2,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return factory


@pytest.fixture
async def make_client(make_settings: Callable[..., Settings]) -> AsyncIterator[Callable[..., Any]]:
    """Start the app (lifespan included) with given settings; yields an httpx client bound to it."""
    stack: list[tuple[FastAPI, Any, httpx.AsyncClient]] = []

    async def factory(**overrides: Any) -> httpx.AsyncClient:
        app = create_app(make_settings(**overrides))
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
        stack.append((app, lifespan, client))
        return client

    yield factory
    for _app, lifespan, client in reversed(stack):
        await client.aclose()
        async with stopping_within(STOP_LIMIT_SECONDS, "the app's shutdown"):
            await lifespan.__aexit__(None, None, None)


@asynccontextmanager
async def stopping_within(seconds: float, what: str) -> AsyncIterator[None]:
    """Fail, with every task's stack, when a teardown outlasts `seconds`, instead of hanging the run."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        stacks = io.StringIO()
        for task in asyncio.all_tasks():
            task.print_stack(file=stacks)
        pytest.fail(f"{what} took over {seconds:.0f} s; tasks still running:\n{stacks.getvalue()}")


@pytest.fixture
async def client(make_client: Callable[..., Any]) -> httpx.AsyncClient:
    result: httpx.AsyncClient = await make_client()
    return result


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real redis-server of the test run's own; missing in CI is a failure, never a skip."""
    with required(redis_server(), "redis-server") as url:
        yield url
