"""A temporary folder tree of real photos with one broken file, and a `process` command isolated from this machine."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from capability_service.cli import main
from tests.support.data import DATA

# Settings a developer's shell or `.env` could hold that would change what the command does.
_ISOLATED = ("AI_API_KEY", "OPENAI_API_KEY", "AI_PROVIDER", "SOURCE_ALLOW_PRIVATE_NETWORKS", "SOURCE_ALLOWED_HOSTS")


@dataclass(frozen=True)
class Tree:
    root: Path
    good: tuple[str, ...]
    broken: str


@pytest.fixture
def photo_tree(tmp_path: Path) -> Tree:
    """`photos/` holding real photos at three depths, a truncated JPEG, and files that are not images."""
    root = tmp_path / "photos"
    (root / "shoes" / "red").mkdir(parents=True)
    shutil.copy(DATA / "rocket.jpg", root / "rocket.jpg")
    shutil.copy(DATA / "chelsea.png", root / "shoes" / "chelsea.png")
    shutil.copy(DATA / "grace_hopper.jpg", root / "shoes" / "red" / "grace_hopper.jpg")
    (root / "broken.jpg").write_bytes((DATA / "grace_hopper.jpg").read_bytes()[:6000])
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.jpg").write_bytes((DATA / "rocket.jpg").read_bytes())
    return Tree(
        root=root,
        good=("rocket.jpg", "shoes/chelsea.png", "shoes/red/grace_hopper.jpg"),
        broken="broken.jpg",
    )


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    def report(self) -> dict[str, Any]:
        report: dict[str, Any] = json.loads(self.out)
        return report


@pytest.fixture
def process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Callable[..., Run]:
    """Run `capability-service process ARGS...` in this process, in `tmp_path` (no `.env`), with default settings."""
    monkeypatch.chdir(tmp_path)
    for name in _ISOLATED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PLUGINS_CONFIG", str(tmp_path / "no-plugins.yaml"))
    monkeypatch.setenv("CPU_WORKERS", "2")

    def run(*args: str, env: dict[str, str] | None = None) -> Run:
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        code = main(["process", *args])
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run
