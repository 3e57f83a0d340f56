"""The application's start and stop."""

from __future__ import annotations

from collections.abc import Callable

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
