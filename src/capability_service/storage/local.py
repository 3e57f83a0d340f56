"""Local-directory storage, served by the service itself under `/files/`."""

from __future__ import annotations

import asyncio
import errno
import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from capability_service.storage.base import StorageError, StoredObject, TransientStorageError
from capability_service.storage.keys import RESULT_PREFIX

FILES_ROUTE = "/files"

# Write failures that can clear by themselves: a full disk or quota being freed, and the I/O and
# connection errors of network file systems (NFS, SMB, FUSE mounts) while their server is away.
# Permissions, read-only file systems and bad names stay failures at once.
TRANSIENT_ERRNOS = frozenset(
    {
        errno.EIO,
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EAGAIN,
        errno.EBUSY,
        errno.EINTR,
        errno.ESTALE,
        errno.ETIMEDOUT,
        errno.ENOTCONN,
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.EHOSTDOWN,
        errno.EHOSTUNREACH,
    }
)


def write_error(exc: OSError) -> StorageError:
    """The storage error for a failed write: transient (worth retrying) or not, by its errno."""
    message = f"could not write result to local storage: {exc.strerror}"
    return TransientStorageError(message) if exc.errno in TRANSIENT_ERRNOS else StorageError(message)


def is_relative_reference(url: str) -> bool:
    """Whether `url` is a path on this service (`/files/...`), to be resolved against a request's address."""
    return url.startswith("/") and not url.startswith("//")


class LocalStorage:
    """Results as files under `root`, served by the service at `/files/{key}`.

    URLs are `{public_base_url}/files/{key}` when a public base is configured; otherwise they are the
    relative reference `/files/{key}`, kept so in job state and made absolute by the API against the
    address each request was made to, so they work on whatever host and port the service answers.
    """

    backend = "local"

    def __init__(self, root: Path, public_base_url: str | None = None) -> None:
        self.root = root.resolve()
        self.public_base_url = public_base_url.rstrip("/") if public_base_url else None

    def path_for(self, key: str) -> Path:
        """The file behind `key`; refuses keys that would leave the storage directory."""
        if not key or key.startswith("/") or "\\" in key or "\x00" in key:
            raise KeyError(key)
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise KeyError(key)
        return path

    def key_from_url(self, url: str) -> str | None:
        """The key behind one of our `/files/` URLs, or None for any other URL.

        Ours are the URLs under the public base and the relative references `/files/ai-playground/...`.
        Without a public base, the address a caller saw them at is not known here: an http(s) URL whose
        path is `/files/ai-playground/...` is then taken as ours (a job still reads only its own user's
        results, see `sources.fetch`).
        """
        prefix = f"{FILES_ROUTE}/"
        if self.public_base_url is not None and url.startswith(self.public_base_url + prefix):
            return unquote(urlsplit(url[len(self.public_base_url) + len(prefix) :]).path)
        parts = urlsplit(url)
        any_host = self.public_base_url is None and parts.scheme in ("http", "https")
        if (is_relative_reference(url) or any_host) and parts.path.startswith(f"{prefix}{RESULT_PREFIX}/"):
            return unquote(parts.path[len(prefix) :])
        return None

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Temp file in the same directory then rename: readers never see half a file.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
        try:
            # mkstemp makes the file private to us; results are meant to be read by a web server too.
            os.fchmod(fd, 0o644)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    async def put(self, key: str, data: bytes, content_type: str) -> StoredObject:
        try:
            path = self.path_for(key)
        except KeyError:
            raise StorageError(f"refusing to write outside the storage directory: {key!r}") from None
        try:
            await asyncio.to_thread(self._write, path, data)
        except OSError as exc:
            raise write_error(exc) from exc
        return StoredObject(key=key, url=await self.url_for(key), size=len(data), content_type=content_type)

    async def get(self, key: str) -> bytes:
        path = self.path_for(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise KeyError(key) from None
        except OSError as exc:
            raise StorageError(f"could not read {key!r} from local storage: {exc.strerror}") from exc

    async def url_for(self, key: str) -> str:
        return f"{self.public_base_url or ''}{FILES_ROUTE}/{quote(key)}"

    async def health(self) -> dict[str, Any]:
        def probe() -> bool:
            self.root.mkdir(parents=True, exist_ok=True)
            return os.access(self.root, os.W_OK)

        try:
            writable = await asyncio.to_thread(probe)
        except OSError as exc:
            return {"backend": self.backend, "healthy": False, "error": exc.strerror}
        return {"backend": self.backend, "healthy": writable}

    async def close(self) -> None:
        return None
