"""data: URIs, local files under SOURCE_LOCAL_ROOT, and keys of our own storage."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from capability_service.sources.errors import SourceError
from capability_service.sources.fetch import FetchLimits, SourceFetcher, decode_data_uri
from capability_service.sources.netguard import AddressPolicy
from capability_service.storage.local import LocalStorage
from tests.sources import loopback

DATA = Path(__file__).parent.parent / "data"
PNG = (DATA / "chelsea.png").read_bytes()
JPEG = (DATA / "rocket.jpg").read_bytes()


async def refused(fetcher: SourceFetcher, url: str, owner: str | None = None) -> SourceError:
    with pytest.raises(SourceError) as info:
        await fetcher.fetch(url, owner=owner)
    return info.value


@pytest.fixture
async def fetcher() -> AsyncIterator[SourceFetcher]:
    instance = SourceFetcher(FetchLimits(max_bytes=len(PNG) + 10))
    yield instance
    await instance.close()


# --- data: URIs -----------------------------------------------------------------------------


def data_uri(payload: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(payload).decode()}"


async def test_data_uri(fetcher: SourceFetcher) -> None:
    fetched = await fetcher.fetch(data_uri(PNG))
    assert fetched.data == PNG
    assert fetched.origin == "data: URI"


async def test_data_uri_tolerates_line_breaks_and_percent_encoding(fetcher: SourceFetcher) -> None:
    encoded = base64.b64encode(PNG).decode()
    wrapped = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    assert (await fetcher.fetch("data:image/png;base64," + wrapped)).data == PNG
    escaped = encoded.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")
    assert (await fetcher.fetch("data:image/png;base64," + escaped)).data == PNG


@pytest.mark.parametrize(
    ("uri", "rule"),
    [
        ("data:image/png,rawbytes", "data-uri"),
        ("data:image/png;base64,not*base64!", "data-uri"),
        ("data:image/png;base64,iVBORw0KGgo", "data-uri"),  # bad padding
        ("data:;base64," + base64.b64encode(b"GIF89a" + b"\0" * 20).decode(), None),
        ("data:text/html;base64," + base64.b64encode(b"<html><body>hi</body></html>").decode(), "not-an-image"),
        ("data:image/png;base64,", "not-an-image"),
    ],
)
async def test_data_uri_errors(fetcher: SourceFetcher, uri: str, rule: str | None) -> None:
    if rule is None:
        assert (await fetcher.fetch(uri)).data.startswith(b"GIF89a")
    else:
        assert (await refused(fetcher, uri)).rule == rule


def test_data_uri_size_is_checked_before_decoding() -> None:
    # 40 MB of characters that are not even base64, against a 1 MB cap: refused for its size, which
    # shows the length is judged before any decoding is tried.
    huge = "data:image/png;base64," + "!" * (40 * 1024 * 1024)
    with pytest.raises(SourceError) as info:
        decode_data_uri(huge, 1024 * 1024)
    assert info.value.rule == "too-large"
    # Just under the cap after escapes and line breaks are removed: decoded, then judged exactly.
    exact = base64.b64encode(b"\0" * 1000).decode()
    assert len(decode_data_uri("data:image/png;base64," + exact, 1000)) == 1000
    with pytest.raises(SourceError):
        decode_data_uri("data:image/png;base64," + exact, 999)


async def test_data_uri_just_over_the_cap(fetcher: SourceFetcher) -> None:
    over = PNG + b"\0" * 11
    assert (await refused(fetcher, data_uri(over))).rule == "too-large"


# --- local files ----------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/ with images and links; secret.jpg and outside/ beside it, not under it."""
    root = tmp_path / "root"
    (root / "sub dir").mkdir(parents=True)
    (root / "a.png").write_bytes(PNG)
    (root / "sub dir" / "b.jpg").write_bytes(JPEG)
    (tmp_path / "secret.jpg").write_bytes(JPEG)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "c.jpg").write_bytes(JPEG)
    (root / "escape.jpg").symlink_to(tmp_path / "secret.jpg")
    (root / "escape-dir").symlink_to(tmp_path / "outside")
    (root / "inside.png").symlink_to(root / "a.png")
    (root / "notes.txt").write_bytes(b"just text, not an image")
    os.mkfifo(root / "pipe.jpg")
    return root


@pytest.fixture
async def local_fetcher(tree: Path) -> AsyncIterator[SourceFetcher]:
    instance = SourceFetcher(FetchLimits(max_bytes=max(len(PNG), len(JPEG)) + 10), local_root=tree)
    yield instance
    await instance.close()


async def test_local_paths_are_off_without_a_root(fetcher: SourceFetcher, tree: Path) -> None:
    for url in (f"file://{tree}/a.png", str(tree / "a.png")):
        error = await refused(fetcher, url)
        assert error.rule == "local-path"
        assert "SOURCE_LOCAL_ROOT" in str(error)


async def test_local_files_under_the_root(local_fetcher: SourceFetcher, tree: Path) -> None:
    assert (await local_fetcher.fetch(f"file://{tree}/a.png")).data == PNG
    assert (await local_fetcher.fetch(f"file://localhost{tree}/a.png")).data == PNG
    assert (await local_fetcher.fetch(f"file://{tree}/sub%20dir/b.jpg")).data == JPEG
    assert (await local_fetcher.fetch(str(tree / "sub dir" / "b.jpg"))).data == JPEG
    assert (await local_fetcher.fetch("file:sub%20dir/b.jpg")).data == JPEG
    assert (await local_fetcher.fetch(f"file://{tree}/sub%20dir/../a.png")).data == PNG
    assert (await local_fetcher.fetch(f"file://{tree}/inside.png")).data == PNG


@pytest.mark.parametrize(
    "path",
    [
        "{root}/../secret.jpg",
        "file://{root}/../secret.jpg",
        "file://{root}/%2e%2e/secret.jpg",
        "file://{root}/sub%20dir/%2E%2E%2F%2E%2E%2Fsecret.jpg",
        "file:../secret.jpg",
        "file:///etc/passwd",
        "/etc/passwd",
        "file://{root}/escape.jpg",
        "{root}/escape-dir/c.jpg",
        "file://{root}/escape-dir/c.jpg",
    ],
)
async def test_escapes_are_refused(local_fetcher: SourceFetcher, tree: Path, path: str) -> None:
    error = await refused(local_fetcher, path.format(root=tree))
    assert error.rule == "local-path"
    assert "outside the allowed local source directory" in str(error)
    if "escape" in path:
        # The message names what the seller sent, never where a link really points.
        assert "secret" not in str(error)
        assert "outside/" not in str(error)


@pytest.mark.parametrize(
    ("path", "rule", "words"),
    [
        ("file://{root}/missing.png", "local-path", "no such file"),
        ("file://{root}/sub%20dir", "local-path", "not a regular file"),
        ("file://{root}/pipe.jpg", "local-path", "not a regular file"),
        ("file://{root}/notes.txt", "not-an-image", "not a supported image"),
        ("file://{root}/a.png%00.jpg", "local-path", "NUL"),
        ("file://evil.example/{root}/a.png", "local-path", "must not name a host"),
        ("file://{root}/a.png?x=1", "local-path", "query"),
    ],
)
async def test_local_errors(local_fetcher: SourceFetcher, tree: Path, path: str, rule: str, words: str) -> None:
    started = time.monotonic()
    error = await refused(local_fetcher, path.format(root=tree))
    assert error.rule == rule
    assert words in str(error)
    assert time.monotonic() - started < 2  # a FIFO must not block the read


async def test_local_file_over_the_cap(tree: Path) -> None:
    instance = SourceFetcher(FetchLimits(max_bytes=1024), local_root=tree)
    try:
        assert (await refused(instance, str(tree / "a.png"))).rule == "too-large"
    finally:
        await instance.close()


# --- keys of our own storage ----------------------------------------------------------------


@pytest.fixture
async def stored(tmp_path: Path) -> AsyncIterator[tuple[SourceFetcher, LocalStorage, str]]:
    # PUBLIC_BASE_URL on loopback with the address policy on: a result URL is still readable,
    # because it is read from the storage, never fetched over HTTP.
    storage = LocalStorage(tmp_path / "results", "http://127.0.0.1:9")
    key = "ai-playground/u-1/job-1/0.png"
    await storage.put(key, PNG, "image/png")
    instance = SourceFetcher(FetchLimits(), policy=AddressPolicy(allow_private=False), storage=storage)
    yield instance, storage, key
    await instance.close()


async def test_bare_storage_key(stored: tuple[SourceFetcher, LocalStorage, str]) -> None:
    fetcher, _storage, key = stored
    fetched = await fetcher.fetch(key)
    assert fetched.data == PNG
    assert fetched.origin == f"storage:{key}"


async def test_storage_url_is_read_without_http(stored: tuple[SourceFetcher, LocalStorage, str]) -> None:
    fetcher, storage, key = stored
    url = await storage.url_for(key)
    assert url == f"http://127.0.0.1:9/files/{key}"
    assert (await fetcher.fetch(url)).data == PNG
    assert (await fetcher.fetch(url + "?cache=bust")).data == PNG


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("ai-playground/u-1/job-1/7.png", "no stored result"),
        ("ai-playground/../../etc/passwd", "not a result of this service"),
        ("ai-playground/u-1/..%2F..%2Fx.png", "not a result of this service"),
        ("http://127.0.0.1:9/files/ai-playground/../secret", "not a result of this service"),
        ("http://127.0.0.1:9/files/other/thing.png", "not a result of this service"),
    ],
)
async def test_storage_key_errors(stored: tuple[SourceFetcher, LocalStorage, str], source: str, words: str) -> None:
    fetcher, _storage, _key = stored
    error = await refused(fetcher, source)
    assert error.rule == "storage-key"
    assert words in str(error)


async def test_other_urls_on_the_public_host_still_go_through_the_policy(
    stored: tuple[SourceFetcher, LocalStorage, str],
) -> None:
    fetcher, _storage, _key = stored
    with loopback.serve({"/a.png": loopback.image(PNG)}) as server:
        error = await refused(fetcher, server.url + "/a.png")
        assert server.stats.connections == 0
    assert error.rule == "private-address"


async def test_without_a_public_base_a_result_url_from_any_address_is_read_from_storage(tmp_path: Path) -> None:
    # No PUBLIC_BASE_URL: the caller saw the result at the address it used (here a port nothing listens on).
    storage = LocalStorage(tmp_path / "results")
    key = "ai-playground/t/u-1/job-1/0.png"
    await storage.put(key, PNG, "image/png")
    fetcher = SourceFetcher(FetchLimits(), policy=AddressPolicy(allow_private=False), storage=storage)
    try:
        fetched = await fetcher.fetch(f"http://127.0.0.1:9/files/{key}", owner="ai-playground/t/u-1/")
        assert (fetched.data, fetched.origin) == (PNG, f"storage:{key}")
        error = await refused(fetcher, f"http://127.0.0.1:9/files/{key}", owner="ai-playground/t/u-2/")
        assert "belongs to another user" in str(error)
    finally:
        await fetcher.close()


@pytest.mark.parametrize("url", ["http://[::1/a.png", "http://[not-an-address]/a.png", "https://[/"])
async def test_a_malformed_url_is_refused_by_name_with_storage_in_use(
    stored: tuple[SourceFetcher, LocalStorage, str], url: str
) -> None:
    # Checked against the storage's own URLs first: a URL no parser accepts is the caller's mistake, not a crash.
    fetcher, _storage, _key = stored
    error = await refused(fetcher, url)
    assert error.rule == "url"
    assert "not a valid URL" in str(error)
