"""Writing a ZIP archive as a stream of byte chunks, one member at a time, with memory bounded.

The standard library's `zipfile` writes to any non-seekable stream (it then puts each member's sizes
in a data descriptor after the data, and switches to ZIP64 by itself past 4 GiB), so the archive is
never held whole: each member's bytes leave as soon as they are written.
"""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Iterable, Iterator


class _Sink(io.RawIOBase):
    """Collects what `zipfile` writes until it is taken; unseekable, so zipfile streams."""

    def __init__(self) -> None:
        super().__init__()
        self._buffer = bytearray()
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._buffer += data
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = 0) -> int:
        raise io.UnsupportedOperation("the archive is streamed")

    def seekable(self) -> bool:
        return False

    def take(self) -> bytes:
        data = bytes(self._buffer)
        self._buffer.clear()
        return data


class ZipStreamWriter:
    """`add(name, data)` returns the archive bytes to send so far; `add_stream` yields them."""

    def __init__(self) -> None:
        self._sink = _Sink()
        self._zip = zipfile.ZipFile(self._sink, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True)
        self._stamp = time.localtime()[:6]
        self._names: set[str] = set()

    def unique(self, name: str) -> str:
        """`name`, or `name` with a counter before its extension if the archive already has it."""
        candidate, counter = name, 2
        stem, dot, ext = name.rpartition(".")
        while candidate in self._names:
            candidate = f"{stem}~{counter}.{ext}" if dot else f"{name}~{counter}"
            counter += 1
        self._names.add(candidate)
        return candidate

    def _info(self, name: str, compress: bool) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, date_time=self._stamp)
        # Photos are compressed already; text (the manifest) is worth deflating.
        info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        info.external_attr = 0o644 << 16
        return info

    def add(self, name: str, data: bytes, *, compress: bool = False) -> bytes:
        """Write one member (pass a name from `unique` when it may repeat)."""
        self._names.add(name)
        self._zip.writestr(self._info(name, compress), data)
        return self._sink.take()

    def add_stream(self, name: str, parts: Iterable[bytes], *, compress: bool = True) -> Iterator[bytes]:
        """A member whose size is not known in advance, written part by part (ZIP64 sizes are reserved
        for it, so any size fits); yields the archive bytes as they are produced."""
        self._names.add(name)
        with self._zip.open(self._info(name, compress), mode="w", force_zip64=True) as member:
            for part in parts:
                member.write(part)
                chunk = self._sink.take()
                if chunk:
                    yield chunk
        yield self._sink.take()

    def close(self) -> bytes:
        """The central directory: the archive's last bytes."""
        self._zip.close()
        return self._sink.take()
