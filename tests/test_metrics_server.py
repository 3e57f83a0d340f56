"""`capability-service metrics` refuses to start when it would have nothing to export."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from capability_service.cli import main
from capability_service.core.config import ConfigError, Settings
from capability_service.metrics_server import create_metrics_app


def test_the_exporter_needs_a_multiprocess_directory(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with pytest.raises(ConfigError, match="set PROMETHEUS_MULTIPROC_DIR"):
        create_metrics_app(make_settings())
    monkeypatch.setenv("API_KEYS", "test-key-0123456789")
    assert main(["metrics", "--port", "1"]) == 2
    assert "PROMETHEUS_MULTIPROC_DIR" in capsys.readouterr().err
