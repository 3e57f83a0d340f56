"""Inputs become work items whose output names mirror the input tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from capability_service.batch.inputs import WorkItem, plan
from capability_service.batch.options import BatchError
from tests.batch.conftest import Tree


def outputs(items: list[WorkItem], out: Path) -> list[str]:
    return [item.output.relative_to(out).as_posix() for item in items]


def test_a_folder_mirrors_its_tree_and_keeps_only_images(photo_tree: Tree, tmp_path: Path) -> None:
    out = tmp_path / "out"
    items = plan([str(photo_tree.root)], out, ".webp")
    assert outputs(items, out) == ["broken.webp", "rocket.webp", "shoes/chelsea.webp", "shoes/red/grace_hopper.webp"]
    assert [Path(item.source) for item in items] == [
        (photo_tree.root / name).absolute()
        for name in ("broken.jpg", "rocket.jpg", "shoes/chelsea.png", "shoes/red/grace_hopper.jpg")
    ]
    assert items[1].name == str(photo_tree.root / "rocket.jpg")


def test_globs_pick_files_at_any_depth_ignoring_case(photo_tree: Tree, tmp_path: Path) -> None:
    (photo_tree.root / "shoes" / "UPPER.PNG").write_bytes(b"x")
    out = tmp_path / "out"
    assert outputs(plan([str(photo_tree.root)], out, ".jpg", ["*.png"]), out) == [
        "shoes/UPPER.jpg",
        "shoes/chelsea.jpg",
    ]
    assert outputs(plan([str(photo_tree.root)], out, ".jpg", ["red/*.jpg", "*.txt"]), out) == [
        "notes.jpg",
        "shoes/red/grace_hopper.jpg",
    ]


def test_files_go_directly_under_out_and_urls_keep_host_and_path(photo_tree: Tree, tmp_path: Path) -> None:
    out = tmp_path / "out"
    items = plan(
        [
            str(photo_tree.root / "shoes" / "red" / "grace_hopper.jpg"),
            "https://cdn.example.com/p/1/main.jpg?w=800",
            "http://127.0.0.1:8080/a%20b/photo",
            "https://cdn.example.com/",
            "data:image/png;base64,AAAA",
        ],
        out,
        ".png",
    )
    assert outputs(items, out) == [
        "grace_hopper.png",
        "cdn.example.com/p/1/main.png",
        "127.0.0.1_8080/a_b/photo.png",
        "cdn.example.com/index.png",
        "data-uri-5.png",
    ]
    assert items[1].source == "https://cdn.example.com/p/1/main.jpg?w=800"


def test_the_output_folder_inside_an_input_is_never_read(photo_tree: Tree) -> None:
    out = photo_tree.root / "results"
    (out / "shoes").mkdir(parents=True)
    (out / "shoes" / "chelsea.webp").write_bytes(b"an earlier result")
    items = plan([str(photo_tree.root)], out, ".webp")
    assert all("results" not in Path(item.source).parts for item in items)
    assert len(items) == 4


def test_two_inputs_writing_one_output_are_refused_before_anything_runs(photo_tree: Tree, tmp_path: Path) -> None:
    (photo_tree.root / "rocket.png").write_bytes(b"x")
    with pytest.raises(BatchError, match=r"rocket.jpg and .*rocket.png would both be written to .*rocket.webp"):
        plan([str(photo_tree.root)], tmp_path / "out", ".webp")
    # The same input twice is one item, not a clash.
    same = str(photo_tree.root / "rocket.jpg")
    assert len(plan([same, same], tmp_path / "out", ".webp")) == 1


def test_a_missing_path_is_an_item_that_will_fail_on_its_own(tmp_path: Path) -> None:
    items = plan([str(tmp_path / "nowhere.jpg")], tmp_path / "out", ".webp")
    assert outputs(items, tmp_path / "out") == ["nowhere.webp"]


def test_an_input_is_never_replaced_by_its_own_result(tmp_path: Path) -> None:
    photo = tmp_path / "photo.webp"
    photo.write_bytes(b"x")
    with pytest.raises(BatchError, match=r"photo.webp would be replaced by its own result; choose another --out"):
        plan([str(tmp_path)], tmp_path, ".webp")
