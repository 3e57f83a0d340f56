"""The batch runner directly: a stop mid-run, a result that cannot be written, atomic writes."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from capability_service.batch.inputs import plan
from capability_service.batch.options import resolve_operation
from capability_service.batch.runner import BatchRunner, ItemResult, ItemStatus, write_atomically
from capability_service.core.config import Settings
from capability_service.plugins.manager import default_registry
from tests.support.data import DATA


def _runner(settings: Settings, *, workers: int = 1, overwrite: bool = False) -> BatchRunner:
    operation = resolve_operation("optimize", {"maxSize": "200"}, default_registry(settings, provider=None))
    return BatchRunner(settings, operation, workers=workers, overwrite=overwrite)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(6):
        shutil.copy(DATA / ("rocket.jpg" if index % 2 else "grace_hopper.jpg"), folder / f"photo_{index}.jpg")
    return folder


async def test_a_stop_finishes_what_is_on_the_cpu_and_starts_nothing_else(
    make_settings: Callable[..., Settings], photos: Path, tmp_path: Path
) -> None:
    runner = _runner(make_settings())
    items = plan([str(photos)], tmp_path / "out", ".webp")
    heard: list[ItemResult] = []

    def on_result(result: ItemResult) -> None:
        heard.append(result)
        runner.stop()

    report = await runner.run(items, on_result=on_result)
    done = report.of(ItemStatus.done)
    stopped = report.of(ItemStatus.stopped)
    assert 1 <= len(done) < len(items)
    assert len(done) + len(stopped) == len(items)
    assert report.interrupted and not report.ok
    for result in done:
        assert result.item.output.stat().st_size == result.bytes_out
    for result in stopped:
        assert not result.item.output.exists()
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == sorted(r.item.output.name for r in done)


async def test_an_output_that_cannot_be_written_fails_alone(
    make_settings: Callable[..., Settings], photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    # A file where the runner would make a folder: only the image going there fails.
    (photos / "sub").mkdir()
    shutil.copy(DATA / "rocket.jpg", photos / "sub" / "inner.jpg")
    (out / "sub").write_bytes(b"a file, not a folder")
    report = await _runner(make_settings(), workers=2).run(plan([str(photos)], out, ".webp"))
    failed = report.of(ItemStatus.failed)
    assert [result.item.name for result in failed] == [str(photos / "sub" / "inner.jpg")]
    assert failed[0].error is not None and failed[0].error.startswith(f"could not write {out / 'sub' / 'inner.webp'}")
    assert report.count(ItemStatus.done) == 6
    assert [path.name for path in out.iterdir() if path.name.endswith(".part")] == []


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "result.webp"
    target.mkdir()  # os.replace cannot put a file where a folder is
    with pytest.raises(OSError, match="Is a directory"):
        write_atomically(target, b"data")
    assert [path.name for path in tmp_path.iterdir()] == ["result.webp"]
    write_atomically(tmp_path / "ok.webp", b"data")
    assert (tmp_path / "ok.webp").read_bytes() == b"data"
