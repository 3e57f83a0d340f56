"""The application's start and stop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from capability_service.core.config import Settings
from capability_service.main import create_app
from tests.support.servers import free_port


async def test_stop_closes_everything_even_when_one_step_fails(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    # Nothing listens on this port: the Redis job engine's own close fails at shutdown.
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    app = create_app(make_settings(job_backend="redis", redis_url=dead_redis))
    services = app.state.services
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    await lifespan.__aexit__(None, None, None)
    assert "closing the job engine failed" in caplog.text
    # The steps after the failing one still ran: the image workers are shut down.
    assert services.cpu._pool._shutdown


async def test_api_docs_are_served_in_development_only(make_client: Callable[..., Any]) -> None:
    development = await make_client()
    assert (await development.get("/openapi.json")).status_code == 200
    production = await make_client(environment="production", api_keys=["a-real-production-key"])
    assert (await production.get("/openapi.json")).status_code == 404
    assert (await production.get("/docs")).status_code == 404
