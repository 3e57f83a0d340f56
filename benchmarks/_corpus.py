"""A corpus of real ~10 MP photos for the benchmarks, and a loopback HTTP server to fetch them from.

Every photo is derived from `tests/data/camera_3648x2736.jpg` (a real 10 MP camera JPEG): each one is
a different crop scaled back to full size, flipped or turned, colour-shifted and re-encoded at its own
quality, so no two files share bytes or pixels and no cache (libjpeg, the OS, a CDN) can make a later
image cheaper than the first. The same `count` always gives the same files.
"""

from __future__ import annotations

import argparse
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pyvips
from tests.support.servers import serving

REPO_ROOT = Path(__file__).resolve().parent.parent
SOURCE_PHOTO = REPO_ROOT / "tests" / "data" / "camera_3648x2736.jpg"
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
JPEG_START = b"\xff\xd8"


def _variant(source: pyvips.Image, index: int) -> tuple[pyvips.Image, dict[str, Any]]:
    width, height = source.width, source.height
    # A crop of 88..100 % of each side, its origin walking across the frame, scaled back to the
    # source size: different pixels everywhere at the same megapixel count.
    keep = 1.0 - 0.012 * (index % 11)
    crop_w, crop_h = round(width * keep), round(height * keep)
    left = (index * 37) % (width - crop_w + 1)
    top = (index * 53) % (height - crop_h + 1)
    image = source.crop(left, top, crop_w, crop_h)
    if (crop_w, crop_h) != (width, height):
        image = image.resize(width / crop_w, vscale=height / crop_h, kernel="lanczos3")
    # Turns give portrait photos too, as sellers shoot both.
    turn = index % 4
    if turn == 1:
        image = image.fliphor()
    elif turn == 2:
        image = image.rot90()
    elif turn == 3:
        image = image.flipver().fliphor()
    # A slight exposure and colour-balance shift per photo.
    gain = [1.0 + 0.015 * ((index * k) % 7 - 3) for k in (1, 2, 3)]
    image = (image.linear(gain, [2.0 * ((index % 5) - 2)] * 3)).cast("uchar")
    options: dict[str, Any] = {
        "Q": 80 + (index * 7) % 16,
        # Phone cameras write 4:2:0; some editors keep full chroma.
        "subsample_mode": "off" if index % 5 == 4 else "on",
        "optimize_coding": index % 2 == 0,
        "keep": "none",
    }
    return image, options


def write_corpus(directory: Path, count: int = 20, source: Path = SOURCE_PHOTO) -> list[Path]:
    """Write `count` distinct ~10 MP JPEGs into `directory` (created if needed); returns their paths.

    Deterministic: the same `count` and source give the same files, named `photo_NN.jpg`.
    """
    if count < 1:
        raise ValueError("count must be at least 1")
    directory.mkdir(parents=True, exist_ok=True)
    base = pyvips.Image.new_from_file(str(source), access="random").autorot()
    if base.bands > 3:
        base = base.extract_band(0, n=3)
    base = base.copy_memory()
    paths: list[Path] = []
    for index in range(count):
        image, options = _variant(base, index)
        path = directory / f"photo_{index:02d}.jpg"
        path.write_bytes(bytes(image.jpegsave_buffer(**options)))
        paths.append(path)
    return paths


def list_photos(directory: Path) -> list[Path]:
    """The photos of a corpus directory (JPEG, PNG, WebP), in name order."""
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)


def add_corpus_options(parser: argparse.ArgumentParser, *, quick: str, images: str) -> None:
    """`--quick` (helped by `quick`), `--corpus`, and `--images` (`images` photos: 20, or 6 with --quick).

    Read the count with `corpus_size`.
    """
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--corpus", type=Path, help="a directory of photos to use instead of the generated ones")
    parser.add_argument("--images", type=int, help=f"{images} [20; 6 with --quick]")


def corpus_size(args: argparse.Namespace) -> int:
    """The photos asked for by the options of `add_corpus_options`."""
    count: int = args.images or (6 if args.quick else 20)
    return count


def prepare_corpus(scratch: Path, count: int, corpus: Path | None = None) -> tuple[Path, list[Path]]:
    """A directory of `count` photos and their paths: the first ones of `corpus`, or new ones under `scratch`.

    Raises `ValueError` when `corpus` holds fewer than `count` photos.
    """
    if corpus is not None:
        photos = list_photos(corpus)[:count]
        if len(photos) < count:
            raise ValueError(f"--corpus {corpus} holds {len(photos)} photos; {count} needed")
        return corpus, photos
    directory = scratch / "corpus"
    started = time.perf_counter()
    photos = write_corpus(directory, count)
    print(f"corpus: {count} photos written in {time.perf_counter() - started:.1f} s")
    return directory, photos


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


@contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """Serve the files of `directory` on an ephemeral 127.0.0.1 port from a daemon thread.

    Yields the base URL (`http://127.0.0.1:PORT`); the server stops when the block exits.
    """
    handler = partial(_QuietHandler, directory=str(directory))
    with serving(ThreadingHTTPServer(("127.0.0.1", 0), handler), name="corpus-http") as base:
        yield base


def jpeg_copy(data: bytes, copy: int) -> bytes:
    """The JPEG `data` with a comment segment naming `copy` right after its start marker.

    The pixels and the decoding work are exactly those of `data`, the bytes differ: a content-hash
    cache (the service's result cache) sees a new photo, so many sources can be made from a few
    photos without writing them all to disk.
    """
    if not data.startswith(JPEG_START):
        raise ValueError("not a JPEG: copies are made of JPEG photos only")
    comment = f"copy {copy}".encode()
    # COM marker, then a big-endian length that counts itself (2 bytes) and the text.
    return data[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + data[2:]


@contextmanager
def serve_copies(photos: list[Path]) -> Iterator[str]:
    """Serve copies of JPEG `photos` at `{base}/{copy}/{photo name}` on an ephemeral 127.0.0.1 port.

    Each (copy, photo) pair has bytes of its own (see `jpeg_copy`); the photos are read once and
    held in memory. Yields the base URL; the server stops when the block exits.
    """
    originals = {photo.name: photo.read_bytes() for photo in photos}
    for photo in photos:
        # Refused now, not as a failed download in the middle of a run.
        if not originals[photo.name].startswith(JPEG_START):
            raise ValueError(f"{photo} is not a JPEG: copies are made of JPEG photos only")

    class CopyHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            copy, _, name = self.path.lstrip("/").partition("/")
            data = originals.get(name)
            if data is None or not copy.isdigit():
                self.send_error(404)
                return
            body = jpeg_copy(data, int(copy))
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    with serving(ThreadingHTTPServer(("127.0.0.1", 0), CopyHandler), name="corpus-copies-http") as base:
        yield base
