"""`GET /api/v1/ai/job-types`: the config schema of every job type, from the models that validate jobs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.api.helpers import submit
from tests.support.data import AUTH


async def test_each_job_type_comes_with_its_config_schema(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/ai/job-types", headers=AUTH)
    assert response.status_code == 200
    body = response.json()
    types = {entry["type"]: entry for entry in body["job_types"]}
    assert sorted(types) == ["background_replacement", "batch_optimization", "image_enhancement"]
    assert all(entry["plugin"] == "ai-playground" and entry["enabled"] for entry in types.values())

    optimize = types["batch_optimization"]["config_schema"]["properties"]
    assert optimize["maxSize"] == {
        "default": 1920,
        "maximum": 10000,
        "minimum": 16,
        "title": "Maxsize",
        "type": "integer",
    }
    assert optimize["format"]["enum"] == ["webp", "jpg", "png", "avif"]
    background = types["background_replacement"]["config_schema"]
    assert background["required"] == ["backgroundPrompt"]
    assert background["properties"]["padding"]["maximum"] == 0.4
    assert background["properties"]["mode"]["enum"] == ["composite", "generative"]
    assert types["image_enhancement"]["config_schema"]["properties"]["enhancementLevel"]["default"] == 5

    assert body["limits"]["max_images_per_job"] == 100
    assert body["remote_model"] is None
    assert body["background_target"] == {"width": 1500, "height": 2000}


async def test_the_schema_limits_are_the_ones_submit_enforces(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/v1/ai/job-types", headers=AUTH)).json()
    schema = next(e for e in body["job_types"] if e["type"] == "batch_optimization")["config_schema"]
    limit = schema["properties"]["maxSize"]["maximum"]
    over = await submit(client, type="batch_optimization", config={"maxSize": limit + 1}, source_image_urls=["x"])
    assert over.status_code == 400
    assert over.json()["errors"][0]["field"] == "config.maxSize"


async def test_a_disabled_plugin_is_reported(make_client: Callable[..., Any], tmp_path: Any) -> None:
    plugins = tmp_path / "plugins.yaml"
    plugins.write_text("plugins:\n  ai-playground:\n    enabled: false\n")
    client = await make_client(plugins_config=plugins)
    body = (await client.get("/api/v1/ai/job-types", headers=AUTH)).json()
    assert {entry["enabled"] for entry in body["job_types"]} == {False}
    assert "disabled" in body["job_types"][0]["disabled_reason"]


@pytest.mark.parametrize("key", [None, "wrong-key-123456"])
async def test_it_needs_a_valid_key(client: httpx.AsyncClient, key: str | None) -> None:
    response = await client.get("/api/v1/ai/job-types", headers={"X-API-Key": key} if key else {})
    assert response.status_code == 401
