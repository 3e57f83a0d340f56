"""`capability-service process` end to end on a folder tree of real photos with one broken file."""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import pyvips

from tests.batch.conftest import Run, Tree
from tests.support.data import DATA
from tests.support.servers import http_server, static_bytes

GOOD_OUTPUTS = ("rocket.jpg", "shoes/chelsea.jpg", "shoes/red/grace_hopper.jpg")
# The truncated JPEG's reason. libvips keeps one error buffer for all threads, so while another image
# is encoded at the same moment the reason is now and then the encoder's generic failure instead.
BROKEN_REASON = re.compile(r"the image data is broken or truncated: |the image could not be encoded as \w+: ")


def image_size(path: Path) -> tuple[int, int, str]:
    # fail=True: a truncated or half-written file is an error, not a partial image.
    image = pyvips.Image.new_from_file(str(path), access="sequential", fail=True)
    image.avg()
    return image.width, image.height, str(image.get("vips-loader"))


def files_under(folder: Path) -> list[str]:
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())


def test_a_folder_is_processed_into_a_mirrored_tree_and_the_broken_file_fails_alone(
    process: Callable[..., Run], photo_tree: Tree, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    run = process("optimize", str(photo_tree.root), "--out", str(out), "-O", "maxSize=256", "-O", "format=jpg")
    assert run.code == 1, run.err
    assert files_under(out) == ["rocket.jpg", "shoes/chelsea.jpg", "shoes/red/grace_hopper.jpg"]
    for name in GOOD_OUTPUTS:
        width, height, loader = image_size(out / name)
        assert max(width, height) == 256
        assert loader == "jpegload"
    # The summary: counts, bytes, and the broken file with its reason.
    assert "Summary" in run.out
    lines = {line.split("│")[1].strip(): line for line in run.out.splitlines() if line.count("│") > 2}
    assert lines["done"].split("│")[2].strip() == "3"
    assert lines["failed"].split("│")[2].strip() == "1"
    assert lines["skipped (output exists)"].split("│")[2].strip() == "0"
    bytes_in = sum((photo_tree.root / name).stat().st_size for name in photo_tree.good)
    assert f"{bytes_in / 1024:.1f} KiB" in lines["done"]
    failed_line = next(line for line in run.out.splitlines() if "broken.jpg" in line)
    assert failed_line.startswith(f"  {photo_tree.root / photo_tree.broken}: ")
    assert BROKEN_REASON.search(failed_line)
    # Failures are reported as they happen, above the progress bar with its rate and ETA.
    assert "failed" in run.err and "broken.jpg" in run.err
    bar = run.err.splitlines()[-1]
    assert bar.startswith("optimize") and "4/4" in bar and "img/s" in bar and "ETA" in bar


def test_the_json_summary_and_a_second_run_that_skips_everything(
    process: Callable[..., Run], photo_tree: Tree, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = ("optimize", str(photo_tree.root), "--out", str(out), "--option", "maxSize=300", "--json")
    first = process(*args)
    assert first.code == 1
    report = first.report()
    assert report["ok"] is False
    assert report["counts"] == {"done": 3, "skipped": 0, "failed": 1, "stopped": 0}
    by_input = {Path(item["input"]).relative_to(photo_tree.root).as_posix(): item for item in report["items"]}
    broken = by_input[photo_tree.broken]
    assert broken["status"] == "failed"
    assert BROKEN_REASON.match(broken["error"])
    assert broken["output"] == str(out / "broken.webp")
    assert not (out / "broken.webp").exists()
    for name in photo_tree.good:
        item = by_input[name]
        output = Path(item["output"])
        assert item["status"] == "done"
        assert item["bytes_in"] == (photo_tree.root / name).stat().st_size
        assert item["bytes_out"] == output.stat().st_size
        assert (item["width"], item["height"]) == image_size(output)[:2]
    assert report["seconds"] > 0 and report["cpu_seconds"] > 0
    assert report["bytes_in"] == sum(by_input[name]["bytes_in"] for name in photo_tree.good)
    assert report["bytes_out"] == sum(by_input[name]["bytes_out"] for name in photo_tree.good)
    stamps = {name: (out / name).stat().st_mtime_ns for name in files_under(out)}

    second = process(*args)
    assert second.code == 1
    assert second.report()["counts"] == {"done": 0, "skipped": 3, "failed": 1, "stopped": 0}
    assert {name: (out / name).stat().st_mtime_ns for name in files_under(out)} == stamps


def test_overwrite_replaces_what_exists_and_a_clean_run_exits_zero(
    process: Callable[..., Run], photo_tree: Tree, tmp_path: Path
) -> None:
    (photo_tree.root / photo_tree.broken).unlink()
    out = tmp_path / "out"
    (out / "shoes").mkdir(parents=True)
    (out / "shoes" / "chelsea.webp").write_bytes(b"an old result")
    kept = process("optimize", str(photo_tree.root), "--out", str(out), "--json")
    assert kept.code == 0, kept.out
    assert kept.report()["counts"] == {"done": 2, "skipped": 1, "failed": 0, "stopped": 0}
    assert (out / "shoes" / "chelsea.webp").read_bytes() == b"an old result"

    replaced = process("optimize", str(photo_tree.root), "--out", str(out), "--overwrite", "--json")
    assert replaced.code == 0
    assert replaced.report()["counts"] == {"done": 3, "skipped": 0, "failed": 0, "stopped": 0}
    assert image_size(out / "shoes" / "chelsea.webp") == (451, 300, "webpload")
    assert files_under(out) == ["rocket.webp", "shoes/chelsea.webp", "shoes/red/grace_hopper.webp"]


def test_files_are_written_like_any_new_file_and_no_temporary_file_is_left(
    process: Callable[..., Run], photo_tree: Tree, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    previous = os.umask(0o022)
    try:
        assert process("optimize", str(photo_tree.root / "rocket.jpg"), "--out", str(out)).code == 0
    finally:
        os.umask(previous)
    assert (out / "rocket.webp").stat().st_mode & 0o777 == 0o644
    assert [path.name for path in out.iterdir()] == ["rocket.webp"]


def test_enhance_and_background_run_the_same_pipelines_as_the_job_api(
    process: Callable[..., Run], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    enhanced = process("enhance", str(DATA / "rocket.jpg"), "--out", str(out), "-O", "upscale=true", "--json")
    assert enhanced.code == 0, enhanced.err
    source = image_size(DATA / "rocket.jpg")
    assert image_size(out / "rocket.png") == (source[0] * 2, source[1] * 2, "pngload")

    product = DATA / "Minduka_Present_Blue_Pack.png"
    background = process(
        "background", str(product), "--out", str(out), "-O", "backgroundPrompt=light grey studio", "-O", "format=webp"
    )
    assert background.code == 0, background.err
    assert image_size(out / "Minduka_Present_Blue_Pack.webp") == (1500, 2000, "webpload")


def test_urls_are_read_under_the_source_policy(process: Callable[..., Run], tmp_path: Path) -> None:
    photo = (DATA / "grace_hopper.jpg").read_bytes()
    out = tmp_path / "out"
    with http_server({"/shop/photo.jpg": static_bytes(photo)}) as base:
        url = f"{base}/shop/photo.jpg"
        refused = process("optimize", url, "--out", str(out), "--json")
        assert refused.code == 1
        error = refused.report()["items"][0]["error"]
        assert error.startswith("could not read the source: 127.0.0.1 ")
        assert "loopback address" in error

        allowed = process("optimize", url, "--out", str(out), "--json", env={"SOURCE_ALLOW_PRIVATE_NETWORKS": "true"})
        assert allowed.code == 0, allowed.out
        host = base.removeprefix("http://").replace(":", "_")
        assert image_size(out / host / "shop" / "photo.webp")[:2] == image_size(DATA / "grace_hopper.jpg")[:2]

        data_uri = "data:image/jpeg;base64," + base64.b64encode(photo).decode()
        inline = process("optimize", data_uri, "--out", str(out), "-O", "maxSize=100", "--json")
        assert inline.code == 0
        assert max(image_size(out / "data-uri-1.webp")[:2]) == 100


def test_usage_errors_exit_2_and_name_the_problem(
    process: Callable[..., Run], photo_tree: Tree, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    bad_option = process("optimize", str(photo_tree.root), "--out", str(out), "-O", "maxSize=99999")
    assert bad_option.code == 2
    assert "--option maxSize: Input should be less than or equal to 10000" in bad_option.err
    missing = process("background", str(photo_tree.root), "--out", str(out))
    assert missing.code == 2
    assert "--option backgroundPrompt=... is required for background" in missing.err
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = process("optimize", str(empty), "--out", str(out))
    assert nothing.code == 2
    assert "no images found in the inputs" in nothing.err
    assert not out.exists()


def test_a_missing_input_fails_alone(process: Callable[..., Run], photo_tree: Tree, tmp_path: Path) -> None:
    out = tmp_path / "out"
    missing = tmp_path / "nowhere.jpg"
    run = process("optimize", str(missing), str(photo_tree.root / "rocket.jpg"), "--out", str(out), "--json")
    assert run.code == 1
    items = {item["input"]: item for item in run.report()["items"]}
    assert items[str(missing)]["error"] == f"could not read the source: no such file: {missing}"
    assert items[str(photo_tree.root / "rocket.jpg")]["status"] == "done"


def _start(tmp_path: Path, inputs: Path, out: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PLUGINS_CONFIG": str(tmp_path / "no-plugins.yaml"),
        # One image at a time on the CPU: the stop lands while most images are still waiting.
        "CPU_WORKERS": "1",
    }
    command = [sys.executable, "-m", "capability_service.cli", "process", "enhance", str(inputs), "--out", str(out)]
    return subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for_first_result(process: subprocess.Popen[bytes], out: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not (out.is_dir() and any(path.suffix == ".png" for path in out.iterdir())):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no result was written in time"
        time.sleep(0.05)


def _interrupt_after_first_result(tmp_path: Path, inputs: Path, out: Path, interrupts: int) -> tuple[str, str]:
    """Run `process enhance`, press Ctrl-C `interrupts` times once a result is written; its stdout and stderr.

    The command must exit with 130 (interrupted).
    """
    process = _start(tmp_path, inputs, out)
    try:
        _wait_for_first_result(process, out)
        for _ in range(interrupts):
            process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, stderr.decode()
    return stdout.decode(), stderr.decode()


@pytest.fixture
def big_photos(tmp_path: Path) -> Path:
    folder = tmp_path / "big"
    folder.mkdir()
    for index in range(5):
        (folder / f"photo_{index}.jpg").write_bytes((DATA / "camera_3648x2736.jpg").read_bytes())
    return folder


def test_ctrl_c_finishes_the_image_in_progress_and_keeps_every_finished_file(tmp_path: Path, big_photos: Path) -> None:
    out = tmp_path / "out"
    stdout, stderr = _interrupt_after_first_result(tmp_path, big_photos, out, interrupts=1)
    assert "stopping: finishing the images in progress" in stderr
    assert "Traceback" not in stderr
    written = files_under(out)
    # Every file is a complete image; none is half-written; the rest never started.
    assert 1 <= len(written) < 5
    assert all(name.endswith(".png") for name in written)
    for name in written:
        assert image_size(out / name)[:2] == (3648, 2736)
    assert "stopped before the end" in stdout
    stopped = next(line for line in stdout.splitlines() if "stopped (not processed)" in line)
    assert stopped.split("│")[2].strip() == str(5 - len(written))


def test_a_second_ctrl_c_stops_at_once_and_leaves_no_partial_file(tmp_path: Path, big_photos: Path) -> None:
    out = tmp_path / "out"
    _stdout, stderr = _interrupt_after_first_result(tmp_path, big_photos, out, interrupts=2)
    assert "Traceback" not in stderr
    for name in files_under(out):
        assert name.endswith(".png"), name
        assert image_size(out / name)[:2] == (3648, 2736)
