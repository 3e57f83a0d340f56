"""The plugin registry: plugins found by the job types they declare, their settings read and checked at start."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from capability_service.core.config import ConfigError, Settings
from capability_service.plugins.base import InvalidConfig, OperationUnavailable, PluginDisabled
from capability_service.plugins.manager import default_registry


def test_plugins_are_found_by_the_job_types_they_declare(make_settings: Callable[..., Settings]) -> None:
    registry = default_registry(make_settings(), provider=None)
    assert registry.job_types() == ["background_replacement", "batch_optimization", "image_enhancement"]
    plugin = registry.for_job_type("batch_optimization")
    assert plugin is not None and plugin.name == "ai-playground"
    # A synchronous operation is not a job type.
    assert registry.for_job_type("compress") is None
    assert registry.for_job_type("unknown") is None


def test_plugin_settings_from_yaml_take_their_field_types(
    make_settings: Callable[..., Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "plugins.yaml"
    config.write_text("plugins:\n  image-compress:\n    enabled: ${COMPRESS_ON:-true}\n")
    monkeypatch.setenv("COMPRESS_ON", "false")
    registry = default_registry(make_settings(plugins_config=config), provider=None)
    compress = registry.get("image-compress")
    assert compress.enabled is False
    with pytest.raises(PluginDisabled, match="disabled"):
        compress.prepare("compress", {})


def test_a_bad_plugin_setting_fails_at_start_naming_plugin_and_field(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    config = tmp_path / "plugins.yaml"
    config.write_text("plugins:\n  ai-playground:\n    enabled: maybe\n    colour: blue\n")
    with pytest.raises(ConfigError, match=r"ai-playground.*enabled.*colour") as error:
        default_registry(make_settings(plugins_config=config), provider=None)
    assert "PLUGINS_CONFIG" in str(error.value)


def test_prepare_names_the_bad_field_and_refuses_what_cannot_run_here(make_settings: Callable[..., Settings]) -> None:
    plugin = default_registry(make_settings(), provider=None).get("ai-playground")
    with pytest.raises(InvalidConfig) as error:
        plugin.prepare("batch_optimization", {"maxSize": 5})
    assert error.value.field == "maxSize"
    with pytest.raises(OperationUnavailable, match="AI_API_KEY"):
        plugin.prepare("background_replacement", {"backgroundPrompt": "sea", "mode": "generative"})
    config = plugin.prepare("batch_optimization", {"maxSize": 640})
    assert config.model_dump(by_alias=True)["maxSize"] == 640
