"""glibc allocator tuning, observed from glibc's own statistics in fresh Python processes."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from capability_service.jobs.cpu import CpuExecutor

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt tuning applies to glibc only")

# glibc's `struct mallinfo2`, all size_t.
MALLINFO2_FIELDS = (
    *("arena", "ordblks", "smblks", "hblks", "hblkhd"),
    *("usmblks", "fsmblks", "uordblks", "fordblks", "keepcost"),
)

_PRELUDE = """
import ctypes, sys, threading
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
"""

# After a 3 MiB block is freed, glibc's adaptive threshold rises and a 2 MiB block comes from the
# heap; with the tuned fixed 1 MiB threshold it is still mmapped. Prints the mmapped blocks added.
_MMAP_PROBE = """
class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in {fields!r}]
libc.mallinfo2.restype = Mallinfo2
setup()
block = libc.malloc(3 << 20)
libc.free(block)
before = libc.mallinfo2().hblks
block = libc.malloc(2 << 20)
print(libc.mallinfo2().hblks - before)
libc.free(block)
"""

# Six threads allocating at the same time; glibc prints one "Arena N:" line per arena to stderr.
_ARENA_PROBE = """
setup()
barrier = threading.Barrier(6)
def work():
    block = libc.malloc(64 * 1024)
    barrier.wait()
    libc.free(block)
threads = [threading.Thread(target=work) for _ in range(6)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
sys.stdout.flush()
libc.malloc_stats()
"""

_TUNE = """
def setup():
    from capability_service.core.allocator import tune_allocator
    tune_allocator()
    tune_allocator()
"""

_PLAIN = """
def setup():
    pass
"""


def _create_app_setup(tmp_path: Path) -> str:
    # Application start-up is where the service tunes the allocator.
    return textwrap.dedent(f"""
        def setup():
            from capability_service.core.config import Settings
            from capability_service.main import create_app
            create_app(Settings(_env_file=None, api_keys=["k" * 20], local_storage_dir={str(tmp_path)!r},
                                plugins_config={str(tmp_path / "none.yaml")!r}))
        """)


def _run(setup: str, probe: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {name: value for name, value in os.environ.items() if not name.startswith("MALLOC_")}
    return subprocess.run(
        [sys.executable, "-c", _PRELUDE + setup + probe],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def _mmapped(setup: str, **env: str) -> int:
    return int(_run(setup, _MMAP_PROBE.format(fields=MALLINFO2_FIELDS), **env).stdout.split()[-1])


def _arenas(setup: str, **env: str) -> int:
    return sum(1 for line in _run(setup, _ARENA_PROBE, **env).stderr.splitlines() if line.startswith("Arena "))


def test_large_buffers_stay_mmapped_once_tuned() -> None:
    assert _mmapped(_PLAIN) == 0
    assert _mmapped(_TUNE) == 1


def test_at_most_two_arenas_once_tuned() -> None:
    assert _arenas(_PLAIN) > 2
    assert _arenas(_TUNE) == 2


def test_the_standard_environment_variables_take_precedence() -> None:
    assert _mmapped(_TUNE, MALLOC_MMAP_THRESHOLD_=str(8 << 20)) == 0
    assert _arenas(_TUNE, MALLOC_ARENA_MAX="4") == 4


def test_creating_the_app_tunes_the_allocator(tmp_path: Path) -> None:
    setup = _create_app_setup(tmp_path)
    assert _mmapped(setup) == 1
    assert _arenas(setup) == 2


def mmapped_after_growth() -> int:
    """The `_MMAP_PROBE` measurement, run inside the calling process (a pool process below)."""
    import ctypes

    class Mallinfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in MALLINFO2_FIELDS]

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.mallinfo2.restype = Mallinfo2
    libc.free(libc.malloc(3 << 20))
    before = int(libc.mallinfo2().hblks)
    block = libc.malloc(2 << 20)
    added = int(libc.mallinfo2().hblks) - before
    libc.free(block)
    return added


@pytest.mark.skipif(
    any(name.startswith("MALLOC_") for name in os.environ), reason="pool processes inherit MALLOC_* settings"
)
async def test_process_pool_workers_tune_their_own_allocator() -> None:
    executor = CpuExecutor("process", 1)
    try:
        assert await executor.run(mmapped_after_growth) == 1
    finally:
        await executor.close()
