"""The command's inputs (files, folders, URLs) as work items, each with the path its result goes to.

Output names mirror the input tree:

- a folder's images keep their path inside the folder: `photos/` holding `shoes/red.jpg` gives
  `OUT/shoes/red.webp`;
- a file goes directly under `OUT`: `photos/shoes/red.jpg` gives `OUT/red.webp`;
- a URL keeps its host and path: `https://cdn.example.com/p/1/main.jpg` gives
  `OUT/cdn.example.com/p/1/main.webp`.

Only the extension changes, to the output format's. Two inputs that would write the same output are
refused before anything runs, rather than one silently replacing the other.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from capability_service.batch.options import BatchError

# What a folder contributes when no --glob is given: the formats the image pipelines read.
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".tif", ".tiff", ".avif", ".heic", ".heif", ".bmp"}
)

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://|^data:", re.IGNORECASE)
_UNSAFE = re.compile(r"[^\w.-]+")


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One image to process: where it comes from and where its result goes."""

    # As shown to the user: the path as found under the input they named, or the URL.
    name: str
    # What the source fetcher reads: an absolute local path or the URL itself.
    source: str
    output: Path


def is_url(text: str) -> bool:
    return bool(_URL.match(text))


def _matches(relative: PurePosixPath, globs: Sequence[str]) -> bool:
    if not globs:
        return relative.suffix.lower() in IMAGE_SUFFIXES
    # Matched from the right like pathlib's `match`, ignoring case: `*.jpg` is any JPEG at any depth,
    # `shoes/*.jpg` any JPEG directly inside a folder named shoes.
    lowered = PurePosixPath(str(relative).lower())
    return any(lowered.match(pattern.lower()) for pattern in globs)


def _walk(folder: Path, skip: Path, globs: Sequence[str]) -> Iterator[Path]:
    """Files under `folder`, recursively, in name order; hidden entries and the output folder left out."""
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        # Never read our own results back as inputs when OUT lies inside an input folder.
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (here / d).resolve() != skip)
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = here / name
            if _matches(PurePosixPath(path.relative_to(folder).as_posix()), globs):
                yield path


def _url_output(url: str, index: int) -> PurePosixPath:
    if url[:5].lower() == "data:":
        return PurePosixPath(f"data-uri-{index + 1}")
    parts = urlsplit(url)
    host = _UNSAFE.sub("_", parts.netloc.rpartition("@")[2]) or "host"
    segments = [_UNSAFE.sub("_", unquote(part)) for part in parts.path.split("/")]
    segments = [part for part in segments if part not in ("", ".", "..")]
    if not segments:
        segments = ["index"]
    return PurePosixPath(host, *segments)


def plan(inputs: Sequence[str], out_dir: Path, extension: str, globs: Sequence[str] = ()) -> list[WorkItem]:
    """Work items for `inputs`, in the order given (a folder's files in name order).

    A path that does not exist is still an item (it fails with "no such file" like any unreadable
    source, and the other inputs go on); a folder without images adds nothing. Raises `BatchError`
    when two inputs would write the same output.
    """
    skip = out_dir.resolve()
    items: list[WorkItem] = []
    seen_sources: set[str] = set()
    owners: dict[Path, str] = {}

    def add(name: str, source: str, relative: PurePosixPath) -> None:
        if source in seen_sources:
            return
        seen_sources.add(source)
        target = out_dir.joinpath(*relative.parts)
        # Only the extension changes: `red.jpg` -> `red.webp`, `IMG_0001` -> `IMG_0001.webp`.
        output = target.with_name((target.stem if target.suffix else target.name) + extension)
        if not is_url(source) and output.resolve() == Path(source).resolve():
            raise BatchError(f"{name} would be replaced by its own result; choose another --out folder")
        earlier = owners.get(output)
        if earlier is not None:
            raise BatchError(
                f"{earlier} and {name} would both be written to {output}; process them into separate --out folders"
            )
        owners[output] = name
        items.append(WorkItem(name=name, source=source, output=output))

    for index, text in enumerate(inputs):
        if is_url(text):
            add(text, text, _url_output(text, index))
            continue
        path = Path(text)
        if path.is_dir():
            for found in _walk(path, skip, globs):
                relative = PurePosixPath(found.relative_to(path).as_posix())
                add(str(found), str(found.absolute()), relative)
        else:
            add(text, str(path.absolute()), PurePosixPath(path.name or text))
    return items
