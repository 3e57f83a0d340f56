"""The `manifest.json` of a catalogue download, kept on a spooled file so its size never weighs on memory.

Entries arrive as downloads finish (in any order) and are written out as JSON lines; at the end they
are streamed into one JSON document: `{"generated_at", "selection", "last_id", "counts", "products",
"images", "errors"}`.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from typing import IO, Any

# Entries stay in memory up to this size; beyond it the spooled file moves to disk.
_IN_MEMORY_BYTES = 2 * 1024 * 1024
_READ_BYTES = 256 * 1024


class _Lines:
    """One JSON array, written element by element to a spooled temporary file."""

    def __init__(self) -> None:
        self.count = 0
        # Closed by `close()` once the manifest has been written into the archive.
        self._file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=_IN_MEMORY_BYTES)  # noqa: SIM115

    def append(self, entry: dict[str, Any]) -> None:
        if self.count:
            self._file.write(b",\n")
        self._file.write(json.dumps(entry, ensure_ascii=False).encode("utf-8"))
        self.count += 1

    def read_all(self) -> Iterator[bytes]:
        self._file.seek(0)
        while chunk := self._file.read(_READ_BYTES):
            yield chunk

    def close(self) -> None:
        self._file.close()


class DownloadManifest:
    def __init__(self, selection: dict[str, Any]) -> None:
        self.selection = selection
        self.last_id: str | None = None
        self.products = _Lines()
        self.images = _Lines()
        self.errors = _Lines()
        self.images_ok = 0
        self.bytes_total = 0

    def product(self, entry: dict[str, Any]) -> None:
        self.products.append(entry)

    def image(self, entry: dict[str, Any]) -> None:
        if entry.get("error") is None:
            self.images_ok += 1
            self.bytes_total += int(entry.get("bytes") or 0)
        self.images.append(entry)

    def error(self, id_: str, error: str) -> None:
        self.errors.append({"id": id_, "error": error})

    def render(self) -> Iterator[bytes]:
        head = {
            "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "selection": self.selection,
            "last_id": self.last_id,
            "counts": {
                "products": self.products.count,
                "images": self.images.count,
                "images_ok": self.images_ok,
                "images_failed": self.images.count - self.images_ok,
                "bytes": self.bytes_total,
                "errors": self.errors.count,
            },
        }
        yield json.dumps(head, ensure_ascii=False, indent=1)[:-2].encode("utf-8")
        for name, lines in (("products", self.products), ("images", self.images), ("errors", self.errors)):
            yield f',\n "{name}": [\n'.encode()
            yield from lines.read_all()
            yield b"\n ]"
        yield b"\n}\n"

    def close(self) -> None:
        for lines in (self.products, self.images, self.errors):
            lines.close()
