"""`file:` sources under SOURCE_LOCAL_ROOT never reach the stored results, in both engines.

The root here contains LOCAL_STORAGE_DIR, as an operator who points it at the service's own data
directory would have it: a path, or a symlink under the root, must not read another seller's result.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.helpers import data_uri, wait_final
from tests.support.data import DATA

SHOP_A = {"X-API-Key": "shop-a-key-0123456789"}
SHOP_B = {"X-API-Key": "shop-b-key-0123456789"}
KEYS = ["shop-a:shop-a-key-0123456789", "shop-b:shop-b-key-0123456789"]
OPTIMIZE = {"format": "jpg", "maxSize": 128}


def user(headers: dict[str, str], user_id: str) -> dict[str, str]:
    return {**headers, "X-User-Id": user_id}


async def run(client: httpx.AsyncClient, headers: dict[str, str], job_id: str, sources: list[str]) -> dict[str, Any]:
    body = {"job_id": job_id, "type": "batch_optimization", "config": OPTIMIZE, "source_image_urls": sources}
    response = await client.post("/api/v1/ai/job", json=body, headers=headers)
    assert response.status_code == 202, response.text
    return await wait_final(client, job_id, headers=headers)


@pytest.fixture
async def shops(make_client: Callable[..., Any], tmp_path: Path) -> httpx.AsyncClient:
    # make_settings stores results in tmp_path / "results": the local root holds them.
    (tmp_path / "photos").mkdir()
    shutil.copy(DATA / "rocket.jpg", tmp_path / "photos" / "rocket.jpg")
    (tmp_path / "photos" / "linked").symlink_to(tmp_path / "results", target_is_directory=True)
    client: httpx.AsyncClient = await make_client(api_keys=KEYS, source_local_root=tmp_path)
    return client


async def test_file_sources_cannot_read_stored_results(shops: httpx.AsyncClient, tmp_path: Path) -> None:
    owner = user(SHOP_A, "u1")
    first = await run(shops, owner, "private", [data_uri("rocket.jpg")])
    assert first["status"] == "completed", first
    stored = next((tmp_path / "results").rglob("0.jpg"))
    relative = stored.relative_to(tmp_path).as_posix()
    through_link = "photos/linked/" + stored.relative_to(tmp_path / "results").as_posix()
    attempts = [f"file:{relative}", str(stored), f"file://{stored}", f"file:{through_link}"]

    # Another tenant, another user of the same tenant, and the owner itself: a path into the result
    # storage is refused for everyone (results are read by key or URL, where the owner is checked).
    for index, headers in enumerate((user(SHOP_B, "u2"), user(SHOP_A, "u2"), owner)):
        result = await run(shops, headers, f"by-path-{index}", attempts)
        assert result["status"] == "failed", result
        assert result["result_image_urls"] == [None] * len(attempts)
        for error in result["errors"]:
            assert "LOCAL_STORAGE_DIR" in error["error"], error

    # A photo under the root and outside the storage is still a source.
    allowed = await run(shops, user(SHOP_B, "u2"), "own-photo", ["file:photos/rocket.jpg"])
    assert allowed["status"] == "completed", allowed
