"""Settings as a real process meets them at start: empty optional settings are unset, wrong ones stop it.

A copied `.env`, a compose file's `${VAR:-}` or an empty Kubernetes secret leaves optional settings
empty: the service must start on its defaults (the offline engine when there is no model key) and say
so. A setting that is truly wrong stops `serve`, `worker` and `process` before they do anything, with
one line naming it and no traceback.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from capability_service.core.config import Settings
from tests.support.data import AUTH, DATA
from tests.support.processes import CLI, launch_serve, process_env

pytestmark = pytest.mark.e2e

# Every setting that is optional (unset by default): the secrets among them, and the rest alike.
OPTIONAL = sorted(name.upper() for name, field in Settings.model_fields.items() if field.default is None)


def test_every_optional_setting_empty_starts_on_the_offline_engine(tmp_path: Path) -> None:
    assert {"AI_API_KEY", "OPENAI_API_KEY", "S3_SECRET_ACCESS_KEY", "OZON_API_KEY", "METRICS_TOKEN"} <= set(OPTIONAL)
    # PROMETHEUS_MULTIPROC_DIR is read by prometheus-client from the process environment itself.
    empty = {name: "" for name in OPTIONAL if name != "PROMETHEUS_MULTIPROC_DIR"}
    service = launch_serve(tmp_path, empty, log_level="info").wait_ready()
    try:
        health = httpx.get(f"{service.url}/api/v1/health", headers=AUTH, timeout=30).json()
        assert health["status"] == "ok", health
        assert health["remote_model"] is None
        assert health["background_engine"] == "offline"
        assert "AI_API_KEY is unset" in health["remote_model_detail"]
        # An empty METRICS_TOKEN is no token: /metrics is open, not closed to every caller.
        assert httpx.get(f"{service.url}/metrics", timeout=30).status_code == 200
        # An empty SOURCE_LOCAL_ROOT turns local paths off instead of opening the working directory.
        payload = {"type": "batch_optimization", "source_image_urls": [str(DATA / "rocket.jpg")]}
        job = httpx.post(f"{service.url}/api/v1/ai/job", json=payload, headers=AUTH, timeout=30).json()["data"]
        with httpx.stream("GET", f"{service.url}/api/v1/ai/job/{job['job_id']}/stream", headers=AUTH) as stream:
            "".join(stream.iter_text())
        result = httpx.get(f"{service.url}/api/v1/ai/job/{job['job_id']}", headers=AUTH, timeout=30).json()
        assert "SOURCE_LOCAL_ROOT is not set" in result["errors"][0]["error"], result
    finally:
        service.stop(signal.SIGKILL)
    assert "Traceback" not in service.output()


def command(name: str, tmp_path: Path) -> list[str]:
    if name == "process":
        return [*CLI, "process", "optimize", str(DATA / "rocket.jpg"), "--out", str(tmp_path / "out")]
    return [*CLI, name]


@pytest.mark.parametrize("name", ["serve", "worker", "process"])
@pytest.mark.parametrize(
    ("setting", "value"),
    [("AI_PROVIDER", "nonsense"), ("API_KEYS", "shop-a:short"), ("REDIS_URL", "localhost:6379")],
)
def test_a_wrong_setting_stops_the_command_with_one_line_naming_it(
    tmp_path: Path, name: str, setting: str, value: str
) -> None:
    env = process_env(tmp_path, {"JOB_BACKEND": "redis", setting: value})
    finished = subprocess.run(
        command(name, tmp_path), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert finished.returncode != 0
    lines = finished.stderr.strip().splitlines()
    assert len(lines) == 1, finished.stderr
    assert setting in lines[0] and "Traceback" not in finished.stderr
