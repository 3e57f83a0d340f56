"""`GET /api/v1/ai/job-types`: each job type's config as a JSON schema, from the models that validate it.

Forms (the try-it page, a front end) read names, defaults, limits and choices here instead of
repeating them, so they cannot drift from what `POST /ai/job` accepts.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from capability_service.api.deps import ApiKeyDep, ServicesDep

router = APIRouter(tags=["ai jobs"], dependencies=[ApiKeyDep])


@router.get("/ai/job-types")
async def job_types(services: ServicesDep) -> dict[str, Any]:
    """Every job type with its plugin, whether it can run now, and its config's JSON schema (camelCase names)."""
    types = []
    for job_type in services.plugins.job_types():
        plugin = services.plugins.for_job_type(job_type)
        if plugin is None:
            continue
        model = plugin.config_models[job_type]
        types.append(
            {
                "type": job_type,
                "plugin": plugin.name,
                "enabled": plugin.disabled_reason is None,
                "disabled_reason": plugin.disabled_reason,
                "config_schema": model.model_json_schema(by_alias=True),
            }
        )
    settings = services.settings
    return {
        "job_types": types,
        "limits": {
            "max_images_per_job": settings.max_images_per_job,
            "max_job_request_bytes": settings.max_job_request_bytes,
            "source_max_bytes": settings.source_max_bytes,
        },
        # Background replacement's `generative` mode and painted scenes need a remote image model.
        "remote_model": services.provider.name if services.provider is not None else None,
        "background_target": {"width": settings.ai_target_width, "height": settings.ai_target_height},
    }
