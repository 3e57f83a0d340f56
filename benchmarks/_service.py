"""Start real `capability-service` processes for a benchmark, talk to their job API, read /proc about them."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

API_KEY = "bench-key-0123456789"
AUTH = {"X-API-Key": API_KEY}
FINAL = ("completed", "failed", "cancelled")
CLI = [sys.executable, "-m", "capability_service.cli"]


@dataclass(frozen=True)
class Service:
    url: str
    pid: int
    # Where its output went, when it was kept.
    log_path: Path | None = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def service_env(
    workdir: Path,
    overrides: dict[str, str] | None = None,
    *,
    port: int | None = None,
    api_key: str = API_KEY,
    unset: Sequence[str] = (),
) -> dict[str, str]:
    """This process's environment plus the settings of a benchmark service with results under `workdir`.

    `unset` names variables of this environment the service must not see (a developer's own key,
    say); `overrides` come last and win.
    """
    env = {name: value for name, value in os.environ.items() if name not in unset}
    env |= {
        "API_KEYS": api_key,
        "LOCAL_STORAGE_DIR": str(workdir / "results"),
        "SOURCE_ALLOW_PRIVATE_NETWORKS": "true",
        # A file that does not exist: the plugins' built-in defaults, whatever this machine has.
        "PLUGINS_CONFIG": str(workdir / "no-plugins.yaml"),
        "LOG_LEVEL": "WARNING",
    }
    if port is not None:
        env["PUBLIC_BASE_URL"] = f"http://127.0.0.1:{port}"
    return env | (overrides or {})


def serve_command(port: int) -> list[str]:
    """`capability-service serve` on 127.0.0.1:`port`, as this Python runs it."""
    return [*CLI, "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]


def stop_process(process: subprocess.Popen[bytes], signum: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Ask `process` to stop with `signum`; killed if it has not exited after `timeout` seconds."""
    if process.poll() is None:
        process.send_signal(signum)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _log_tail(log_path: Path | None) -> str:
    return f":\n{log_path.read_text(errors='replace')[-3000:]}" if log_path is not None else ""


@contextmanager
def running_service(
    workdir: Path,
    overrides: dict[str, str] | None = None,
    *,
    api_key: str = API_KEY,
    unset: Sequence[str] = (),
    command: Callable[[int], list[str]] = serve_command,
    log_path: Path | None = None,
    own_session: bool = False,
    stop_signal: int = signal.SIGTERM,
    startup_timeout: float = 60,
) -> Iterator[Service]:
    """A service on a free loopback port with results under `workdir`, healthy when yielded; stopped on exit.

    `command(port)` gives what to run (`capability-service serve` by default; a launcher of the same
    app with experiments added, for instance). Its output goes to `log_path` when given, and the tail
    of that log is in the error if it does not start. `own_session` starts it in a process group of
    its own, so processes it forks (CPU_EXECUTOR=process) are stopped with it.
    """
    port = free_port()
    env = service_env(workdir, overrides, port=port, api_key=api_key, unset=unset)
    with contextlib.ExitStack() as stack:
        log: IO[bytes] | None = stack.enter_context(log_path.open("wb")) if log_path is not None else None
        # The working directory is the benchmark's own, so no stray `.env` changes the settings above.
        process = subprocess.Popen(
            command(port),
            env=env,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT if log is not None else None,
            start_new_session=own_session,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the service exited with {process.returncode}{_log_tail(log_path)}")
            try:
                if httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the service did not answer within {startup_timeout:.0f} s{_log_tail(log_path)}")
            time.sleep(0.1)
        yield Service(url=url, pid=process.pid, log_path=log_path)
    finally:
        stop_process(process, stop_signal)
        if own_session:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)


@contextmanager
def running_workers(
    workdir: Path, count: int, overrides: dict[str, str], *, concurrency: int = 1
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`count` `capability-service worker` processes (Redis job mode: `overrides` names REDIS_URL)."""
    env = service_env(workdir, {"JOB_BACKEND": "redis", **overrides})
    command = [*CLI, "worker", "--concurrency", str(concurrency)]
    started = [
        subprocess.Popen(command, env=env, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(count)
    ]
    try:
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                process.terminate()
        for process in started:
            stop_process(process)


def run_job(client: httpx.Client, payload: dict[str, Any], timeout: float = 600) -> tuple[dict[str, Any], float]:
    """Submit a job, wait for its final state; returns the result and the wall time in seconds.

    A job still running after `timeout` seconds is cancelled and `TimeoutError` raised.
    """
    started = time.perf_counter()
    response = client.post("/api/v1/ai/job", json=payload, headers=AUTH)
    response.raise_for_status()
    job_id = response.json()["data"]["job_id"]
    deadline = time.monotonic() + timeout
    while True:
        status = client.get(f"/api/v1/ai/job/{job_id}/status", headers=AUTH).json()
        if status["status"] in FINAL:
            break
        if time.monotonic() > deadline:
            client.post(f"/api/v1/ai/job/{job_id}/cancel", headers=AUTH)
            raise TimeoutError(f"job {job_id} did not finish in {timeout:.0f} s")
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    return client.get(f"/api/v1/ai/job/{job_id}", headers=AUTH).json(), elapsed


def status_kib(pid: int, field: str) -> int:
    """A `kB` field of /proc/PID/status (`VmHWM`, `VmRSS`...); 0 if the process or field is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def peak_rss_mib(pid: int) -> float:
    """Peak resident memory of a live process (VmHWM), in MiB."""
    return status_kib(pid, "VmHWM") / 1024


def cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    """User + system CPU time of a process so far (plus its reaped children's); 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # utime, stime, cutime, cstime are fields 14 to 17 of /proc/PID/stat: index 11 to 14 after the name.
    ticks = sum(int(value) for value in fields[11 : 15 if reaped_children else 13])
    return ticks / os.sysconf("SC_CLK_TCK")
