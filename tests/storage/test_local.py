"""The local backend: atomic writes, keys confined to the directory, and the `/files` route."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from capability_service.storage.base import KeyFromUrl, StorageError
from capability_service.storage.local import LocalStorage
from tests.api.helpers import services_of

DATA = Path(__file__).parent.parent / "data"
PNG = (DATA / "chelsea.png").read_bytes()


async def test_put_get_and_urls(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "results", "https://api.example.com/")
    stored = await storage.put("ai-playground/u/j/0.png", PNG, "image/png")
    assert stored.url == "https://api.example.com/files/ai-playground/u/j/0.png"
    assert await storage.get(stored.key) == PNG
    path = tmp_path / "results" / "ai-playground" / "u" / "j" / "0.png"
    assert path.read_bytes() == PNG
    # Readable by a web server serving the directory, not only by this process.
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert isinstance(storage, KeyFromUrl)
    assert storage.key_from_url(stored.url) == stored.key
    assert storage.key_from_url(stored.url + "?v=2") == stored.key
    assert storage.key_from_url("https://elsewhere.example.com/files/ai-playground/u/j/0.png") is None
    assert (await storage.health()) == {"backend": "local", "healthy": True}


async def test_without_a_public_base_urls_are_relative_to_the_service(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "results")
    stored = await storage.put("ai-playground/u/j/0 a.png", PNG, "image/png")
    # Made absolute per request by the API, against the address the caller used.
    assert stored.url == "/files/ai-playground/u/j/0%20a.png"
    assert storage.key_from_url(stored.url) == stored.key
    # The address a caller saw it at is not known here: any http(s) host with our path shape is ours.
    assert storage.key_from_url("http://127.0.0.1:8123/files/ai-playground/u/j/0%20a.png?v=2") == stored.key
    assert storage.key_from_url("https://cdn.example.com/files/other/x.png") is None
    assert storage.key_from_url("/srv/photos/files/ai-playground/x.png") is None
    assert storage.key_from_url("//cdn.example.com/files/ai-playground/u/j/0.png") is None


async def test_concurrent_writes_to_one_key_leave_one_whole_file(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path, "http://x")
    versions = [bytes([n]) * 2_000_000 for n in range(8)]
    await asyncio.gather(
        *(storage.put("ai-playground/u/j/0.bin", data, "application/octet-stream") for data in versions)
    )
    assert await storage.get("ai-playground/u/j/0.bin") in versions
    leftovers = [p.name for p in (tmp_path / "ai-playground" / "u" / "j").iterdir()]
    assert leftovers == ["0.bin"]


@pytest.mark.parametrize("key", ["../escape.png", "/etc/passwd", "a/../../x", "a\\b", "x\x00y", ""])
async def test_keys_cannot_leave_the_directory(tmp_path: Path, key: str) -> None:
    storage = LocalStorage(tmp_path / "results", "http://x")
    with pytest.raises(StorageError):
        await storage.put(key, PNG, "image/png")
    with pytest.raises(KeyError):
        await storage.get(key)
    assert not (tmp_path / "escape.png").exists()


async def test_failed_write_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "ai-playground").write_bytes(b"a file where a directory should be")
    storage = LocalStorage(tmp_path, "http://x")
    with pytest.raises(StorageError, match="could not write"):
        await storage.put("ai-playground/u/j/0.png", PNG, "image/png")


async def test_files_route_serves_results(make_client: Callable[..., Any]) -> None:
    client = await make_client()
    storage = services_of(client).storage
    stored = await storage.put("ai-playground/u/j/0.png", PNG, "image/png")
    response = await client.get(stored.url.replace("http://testserver", ""))
    assert response.status_code == 200
    assert response.content == PNG
    assert response.headers["content-type"] == "image/png"
    assert response.headers["cache-control"] == "public, max-age=3600"
    assert (await client.get("/files/ai-playground/u/j/missing.png")).status_code == 404
    assert (await client.get("/files/..%2F..%2Fetc%2Fpasswd")).status_code == 404
