"""`GET /api/v1/health`: no key needed; plugins, storage and job store at a glance."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header

from capability_service import __version__
from capability_service.api.deps import ServicesDep
from capability_service.providers.factory import key_setting
from capability_service.services import Services

router = APIRouter(tags=["health"])

# What anyone may see of a plugin; the rest (its operations, why it is unhealthy) needs a key.
PUBLIC_PLUGIN_FIELDS = ("name", "display_name", "category", "enabled")


@router.get("/health")
async def health(
    services: ServicesDep, x_api_key: Annotated[str | None, Header(alias="X-API-Key")] = None
) -> dict[str, Any]:
    """`ok`/`degraded` and the plugins for anyone; storage, job engine and model details with a valid key."""
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
    summary: dict[str, Any] = {"status": "ok" if healthy else "degraded", "version": __version__}
    if not services.api_keys.is_valid(x_api_key):
        # Without a key: nothing about where Redis, the bucket or the model live.
        public = [{field: plugin[field] for field in (*PUBLIC_PLUGIN_FIELDS, "healthy")} for plugin in plugins]
        return {**summary, "plugins": public}
    return {
        **summary,
        "environment": services.settings.environment.value,
        "remote_model": services.provider.name if services.provider is not None else None,
        **_engine(services),
        "plugins": plugins,
        "storage": storage,
        "jobs": jobs,
    }


def _engine(services: Services) -> dict[str, str]:
    """Which engine replaces backgrounds, and when it is the offline one, why and how to change that."""
    if services.provider is not None:
        return {"background_engine": "remote", "remote_model_detail": f"configured: {services.provider.name}"}
    settings = services.settings
    detail = (
        f"not configured: {key_setting(settings)} is unset (AI_PROVIDER={settings.ai_provider}); "
        "background replacement runs on the offline engine"
    )
    return {"background_engine": "offline", "remote_model_detail": detail}
