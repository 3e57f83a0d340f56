"""`capability-service metrics`: `GET /metrics` for a host that runs workers and no API.

A worker has no HTTP server; its metrics sit in the host's `PROMETHEUS_MULTIPROC_DIR`, where any API
process of the same host adds them up. On a host without one, this small server exports that directory
(with the same `METRICS_TOKEN` rule) and nothing else.
"""

from __future__ import annotations

from fastapi import FastAPI

from capability_service import __version__
from capability_service.api.observe import install_metrics
from capability_service.core import metrics
from capability_service.core.config import ConfigError, Settings
from capability_service.core.logging import configure_logging


def create_metrics_app(settings: Settings) -> FastAPI:
    """The exporter's app; refuses to start without a multiprocess directory (it would export nothing)."""
    if metrics.multiprocess_dir() is None:
        raise ConfigError(
            "capability-service metrics exports the metrics of this host's processes: set "
            "PROMETHEUS_MULTIPROC_DIR in the environment of every service process of the host, and of this one"
        )
    configure_logging(settings.log_level, settings.log_format, settings.secret_values())
    metrics.prepare_multiprocess_dir()
    app = FastAPI(
        title="Capability Service metrics", version=__version__, docs_url=None, redoc_url=None, openapi_url=None
    )
    install_metrics(app, settings.metrics_token)
    return app
