"""`GET /api/v1/health`: no key needed; plugins, storage and job store at a glance."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from capability_service import __version__
from capability_service.api.deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(services: ServicesDep) -> dict[str, Any]:
    plugins = []
    for plugin in services.plugins:
        report = await plugin.health_check()
        plugins.append(
            {**plugin.describe(), "healthy": report.healthy, **({"detail": report.detail} if report.detail else {})}
        )
    storage = await services.storage.health()
    jobs = await services.store.health()
    jobs.update(services.dispatcher.stats())
    healthy = storage.get("healthy", False) and jobs.get("healthy", False)
    return {
        "status": "ok" if healthy else "degraded",
        "version": __version__,
        "environment": services.settings.environment.value,
        "remote_model": services.provider.name if services.provider is not None else None,
        "plugins": plugins,
        "storage": storage,
        "jobs": jobs,
    }
