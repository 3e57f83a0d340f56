"""`scripts/_python`: which interpreter `./scripts/serve` and `./scripts/test` make `.venv` with.

Each test runs the chooser (or the scripts themselves, which stop at the choice when there is none) with
a PATH of its own: a directory holding real interpreters under the names a machine would have
(`python3` being 3.10 or 3.14, say), plus the few programs the scripts call, and nothing else. No venv is built.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parent.parent.parent
CHOOSER = ROOT / "scripts" / "_python"
BASH = shutil.which("bash") or "/bin/bash"


def interpreter(minor: int) -> str | None:
    """A runnable Python 3.`minor` of this machine: on PATH, or installed by pyenv; None when there is none."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    found = [shutil.which(f"python3.{minor}")]
    found += sorted(glob.glob(str(root / "versions" / f"3.{minor}.*" / "bin" / f"python3.{minor}")), reverse=True)
    for candidate in filter(None, found):
        # A pyenv shim of a version that is not selected is on PATH and fails when run; one that works is
        # a script calling pyenv: the interpreter it runs is the one to link to.
        code = "import sys; print(sys.version_info[:2], sys.executable)"
        ran = subprocess.run([candidate, "-c", code], capture_output=True, text=True)
        if ran.returncode == 0 and ran.stdout.startswith(f"(3, {minor}) "):
            return ran.stdout.split(") ", 1)[1].strip()
    return None


def required(minor: int) -> str:
    found = interpreter(minor)
    if found is None:
        pytest.skip(f"no Python 3.{minor} on this machine (pyenv install 3.{minor})")
    return found


@pytest.fixture
def unsupported() -> str:
    """An unsupported Python of this machine: 3.14 (a new machine's python3) or else 3.10 (an old one's)."""
    for minor in (14, 10):
        found = interpreter(minor)
        if found is not None:
            return found
    pytest.skip("no Python 3.14 or 3.10 on this machine (pyenv install 3.10)")


def path_of(tmp_path: Path, **names: str) -> str:
    """A PATH directory holding `names` (name -> program) and bash, and nothing else."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, target in {"bash": BASH, **names}.items():
        (bin_dir / name).symlink_to(target)
    return str(bin_dir)


def choose(cwd: Path, path: str, python: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": path, "HOME": str(cwd)} | ({"PYTHON": python} if python else {})
    command = [BASH, str(CHOOSER), "--print-python"]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False)


def assert_one_sentence_naming_what_to_install(stderr: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "python3.13" in lines[0] and lines[0].endswith(".")


@pytest.mark.parametrize("minor", [11, 12, 13])
def test_python3_unsupported_picks_an_installed_supported_one(tmp_path: Path, unsupported: str, minor: int) -> None:
    supported = required(minor)
    path = path_of(tmp_path, python3=unsupported, **{f"python3.{minor}": supported})
    chosen = choose(tmp_path, path)
    assert chosen.returncode == 0, chosen.stderr
    assert chosen.stdout.split() == [f"{path}/python3.{minor}", f"3.{minor}"]


@pytest.mark.parametrize("minor", [11, 12, 13])
def test_a_supported_python3_is_used_before_the_others(tmp_path: Path, minor: int) -> None:
    # python3 at 3.13 is used as it is, no longer passed over for an installed 3.12.
    others = {f"python3.{other}": found for other in (11, 12, 13) if other != minor and (found := interpreter(other))}
    path = path_of(tmp_path, python3=required(minor), **others)
    chosen = choose(tmp_path, path)
    assert chosen.returncode == 0, chosen.stderr
    assert chosen.stdout.split() == [f"{path}/python3", f"3.{minor}"]


def test_only_an_unsupported_python_stops_with_one_sentence(tmp_path: Path, unsupported: str) -> None:
    chosen = choose(tmp_path, path_of(tmp_path, python3=unsupported))
    assert chosen.returncode != 0 and chosen.stdout == ""
    assert_one_sentence_naming_what_to_install(chosen.stderr)
    assert "python3 is 3.1" in chosen.stderr


def test_python_set_to_an_unsupported_one_is_refused(tmp_path: Path, unsupported: str) -> None:
    path = path_of(tmp_path, python3=unsupported, **{"python3.11": required(11)})
    chosen = choose(tmp_path, path, python=unsupported)
    assert chosen.returncode != 0
    assert_one_sentence_naming_what_to_install(chosen.stderr)
    assert f"PYTHON={unsupported}" in chosen.stderr


def test_a_venv_made_with_an_unsupported_python_is_not_used(tmp_path: Path, unsupported: str) -> None:
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").symlink_to(unsupported)
    path = path_of(tmp_path, python3=unsupported, **{"python3.11": required(11)})
    chosen = choose(tmp_path, path)
    assert chosen.returncode == 0, chosen.stderr
    assert chosen.stdout.split() == [f"{path}/python3.11", "3.11"]


@pytest.mark.parametrize("minor", [11, 13])
def test_a_venv_made_with_a_supported_python_is_kept(tmp_path: Path, unsupported: str, minor: int) -> None:
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").symlink_to(required(minor))
    chosen = choose(tmp_path, path_of(tmp_path, python3=unsupported))
    assert chosen.returncode == 0, chosen.stderr
    assert chosen.stdout.split() == [".venv/bin/python", f"3.{minor}"]


@pytest.mark.parametrize("script", ["serve", "test"])
def test_the_scripts_stop_before_building_anything_without_a_supported_python(
    tmp_path: Path, unsupported: str, script: str
) -> None:
    # A fresh clone's scripts, on a machine whose only Python is unsupported.
    clone = tmp_path / "clone"
    shutil.copytree(ROOT / "scripts", clone / "scripts")
    tools = {name: shutil.which(name) for name in ("env", "dirname")}
    path = path_of(tmp_path, python3=unsupported, **{name: str(tool) for name, tool in tools.items() if tool})
    env = {"PATH": path, "HOME": str(tmp_path)}
    ran = subprocess.run(
        [str(clone / "scripts" / script)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert ran.returncode != 0
    assert_one_sentence_naming_what_to_install(ran.stderr)
    assert not (clone / ".venv").exists()


def test_the_supported_versions_are_those_of_requires_python() -> None:
    listed = subprocess.run(
        [BASH, "-c", f'. "{CHOOSER}" && echo "${{SUPPORTED_PYTHONS[@]}}"'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    requires = SpecifierSet(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"])
    assert sorted(listed) == [f"3.{minor}" for minor in range(8, 20) if f"3.{minor}.0" in requires]
