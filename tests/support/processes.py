"""Real `capability-service serve` and `worker` processes on loopback, for the e2e tests and the benchmarks.

`launch_serve` runs the HTTP API on a free 127.0.0.1 port and `launch_worker` a Redis-mode worker, both
without waiting, so several processes can boot at once; `wait_ready` returns once the API's
`/api/v1/health` answers or the worker logs that it is connected (`launch_serve(...).wait_ready()`).

Every process:
- gets this environment without any of the service's own settings (a developer's `AI_API_KEY` or
  `JOB_BACKEND`, say), then the settings of a test service under `workdir`, then the caller's;
- runs in `workdir`, so no stray `.env` changes those settings;
- runs in a session of its own, so the pool processes it forks are stopped with it;
- has its output (stdout and stderr) collected: in memory for `output()` and `wait_for_output()`, and
  in `<workdir>/<name>.log`;
- is stopped by `stop()` (or leaving its `with` block): SIGTERM, then SIGKILL after a timeout.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import httpx

from capability_service.core.config import Settings
from tests.support.data import API_KEY
from tests.support.servers import free_port

CLI = (sys.executable, "-m", "capability_service.cli")
# What `capability-service worker` logs (at INFO) once it is connected and taking images.
WORKER_READY = "worker on Redis at"
# Inherited variables the service would read as its settings; libvips' own thread count is one too.
SERVICE_VARIABLES = frozenset({name.upper() for name in Settings.model_fields} | {"VIPS_CONCURRENCY"})


def wait_until(check: Callable[[], object], timeout: float, what: str, interval: float = 0.05) -> None:
    """Call `check()` until it returns something true; `TimeoutError` naming `what` after `timeout` s.

    For states that announce themselves nowhere (a job's status, a count in /health): the pause
    between two looks is the polling interval, not a guess at how long something takes.
    """
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def service_settings(workdir: Path, *, api_key: str = API_KEY) -> dict[str, str]:
    """The settings every test or benchmark service starts from: results under `workdir`, loopback sources."""
    return {
        "API_KEYS": api_key,
        "LOCAL_STORAGE_DIR": str(workdir / "results"),
        "SOURCE_ALLOW_PRIVATE_NETWORKS": "true",
        # A file that does not exist: the plugins' built-in defaults, whatever this machine has.
        "PLUGINS_CONFIG": str(workdir / "no-plugins.yaml"),
        "LOG_LEVEL": "WARNING",
    }


def process_env(workdir: Path, settings: Mapping[str, str] | None = None, *, api_key: str = API_KEY) -> dict[str, str]:
    """This environment without the service's settings, plus `service_settings`, plus `settings`."""
    env = {name: value for name, value in os.environ.items() if name.upper() not in SERVICE_VARIABLES}
    return env | service_settings(workdir, api_key=api_key) | dict(settings or {})


class ServiceProcess:
    """One running `capability-service` process, its collected output, and how to stop it."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._output_closed = False
        self._log: IO[str] = self.log_path.open("w", encoding="utf-8")
        self.process = subprocess.Popen(
            command,
            env=env,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._collect, name=f"{name}-output", daemon=True)
        self._reader.start()

    # ------------------------------------------------------------------ output

    def _collect(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout as stream:
            for raw in stream:
                line = raw.decode("utf-8", errors="replace")
                self._log.write(line)
                self._log.flush()
                with self._changed:
                    self._lines.append(line)
                    self._changed.notify_all()
        with self._changed:
            self._output_closed = True
            self._changed.notify_all()
        self._log.close()

    def output(self) -> str:
        """Everything the process has written so far (stdout and stderr, interleaved)."""
        with self._changed:
            return "".join(self._lines)

    def tail(self, chars: int = 3000) -> str:
        """The last `chars` characters of `output()`, for error messages."""
        return self.output()[-chars:]

    def wait_for_output(self, text: str, timeout: float = 30) -> None:
        """Block until the process has written a line containing `text` (at any time since it started).

        Raises `RuntimeError` with the output if the process closes its output first (it exited),
        `TimeoutError` after `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        checked = 0
        with self._changed:
            while True:
                if any(text in line for line in self._lines[checked:]):
                    return
                checked = len(self._lines)
                if self._output_closed:
                    raise RuntimeError(f"{self.name} ended without writing {text!r}:\n{self.tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.name} did not write {text!r} within {timeout:.0f} s:\n{self.tail()}")
                self._changed.wait(left)

    # ------------------------------------------------------------------ life

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def wait_ready(self, timeout: float = 60) -> Self:
        """Block until the process does its work; `RuntimeError` with its output if it exits first or is late.

        A process that does not get ready is killed, so a failed start leaves nothing running.
        """
        try:
            self._wait_serving(timeout)
        except BaseException as exc:
            self.stop(signal.SIGKILL)
            if isinstance(exc, TimeoutError):
                raise RuntimeError(f"{exc}\n{self.name} output:\n{self.tail()}") from None
            raise
        return self

    def _wait_serving(self, timeout: float) -> None:
        raise NotImplementedError

    def _check_alive(self) -> None:
        if self.process.poll() is not None:
            self._reader.join(timeout=5)
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.tail()}")

    def send_signal(self, signum: int) -> None:
        """Send `signum` to the process itself (not to the pool processes it forked)."""
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        """The exit code once the process has exited; `subprocess.TimeoutExpired` after `timeout` seconds."""
        return self.process.wait(timeout=timeout)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 15) -> int:
        """Send `signum` (if still running), SIGKILL after `timeout` seconds; returns the exit code.

        Whatever the process forked and left behind (pool processes) is killed with it.
        """
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(timeout=10)
        # Its session's process group outlives it while any member does; no member left is fine.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self._reader.join(timeout=10)
        return code

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()


class ApiProcess(ServiceProcess):
    """`capability-service serve`: ready once `/api/v1/health` answers 200 at `url`."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], workdir: Path, url: str) -> None:
        self.url = url
        super().__init__(name, command, env, workdir)

    def _wait_serving(self, timeout: float) -> None:
        wait_until(self._healthy, timeout, f"{self.name} to answer {self.url}/api/v1/health")

    def _healthy(self) -> bool:
        self._check_alive()
        try:
            return httpx.get(f"{self.url}/api/v1/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


class WorkerProcess(ServiceProcess):
    """`capability-service worker`: ready once it logs `WORKER_READY`."""

    def _wait_serving(self, timeout: float) -> None:
        self.wait_for_output(WORKER_READY, timeout)


def launch_serve(
    workdir: Path,
    settings: Mapping[str, str] | None = None,
    *,
    name: str = "serve",
    api_key: str = API_KEY,
    log_level: str = "warning",
) -> ApiProcess:
    """Start `capability-service serve` on a free 127.0.0.1 port; `wait_ready()` before talking to it.

    `PUBLIC_BASE_URL` is unset unless `settings` name one: result URLs follow the address asked, as on a
    fresh clone.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = process_env(workdir, settings, api_key=api_key)
    command = [*CLI, "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", log_level]
    return ApiProcess(name, command, env, workdir, url)


def launch_worker(
    workdir: Path,
    settings: Mapping[str, str] | None = None,
    *,
    name: str = "worker",
    concurrency: int | None = None,
    api_key: str = API_KEY,
) -> WorkerProcess:
    """Start `capability-service worker` (JOB_BACKEND=redis; `settings` name REDIS_URL); `wait_ready()` after.

    It logs at INFO, since its ready signal is an INFO line.
    """
    env = process_env(workdir, {"JOB_BACKEND": "redis", **(settings or {})}, api_key=api_key)
    command = [*CLI, "worker", "--log-level", "info"]
    if concurrency is not None:
        command += ["--concurrency", str(concurrency)]
    return WorkerProcess(name, command, env, workdir)
