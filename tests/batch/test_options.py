"""`--option key=value` pairs are validated by the job API's config models, and errors name the option."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from capability_service.batch.options import BatchError, parse_pairs, resolve_operation
from capability_service.core.config import Settings
from capability_service.plugins.ai_playground.configs import (
    BackgroundReplacementConfig,
    BatchOptimizationConfig,
    ImageEnhancementConfig,
)
from capability_service.plugins.manager import PluginRegistry, default_registry


@pytest.fixture
def plugins(make_settings: Callable[..., Settings]) -> PluginRegistry:
    settings = make_settings()
    return default_registry(settings, provider=None)


def test_pairs_split_on_the_first_equals_sign() -> None:
    assert parse_pairs(["maxSize=800", "backgroundPrompt=a=b", "format=jpg", "format=png"]) == {
        "maxSize": "800",
        "backgroundPrompt": "a=b",
        "format": "png",
    }
    with pytest.raises(BatchError, match=r"--option 'maxSize': expected key=value"):
        parse_pairs(["maxSize"])


def test_values_become_the_config_of_the_job_api(plugins: PluginRegistry) -> None:
    operation = resolve_operation(
        "optimize", {"maxSize": "800", "format": "jpg", "maintain_aspect": "false", "quality": "high"}, plugins
    )
    assert operation.job_type == "batch_optimization"
    assert operation.config == BatchOptimizationConfig(
        max_size=800, format="jpg", maintain_aspect=False, quality="high"
    )
    assert operation.extension == ".jpg"
    defaults = resolve_operation("enhance", {}, plugins)
    assert defaults.config == ImageEnhancementConfig()
    assert defaults.extension == ".png"
    background = resolve_operation(
        "background",
        {"backgroundPrompt": "light grey studio", "padding": "0.2", "shadow": "no", "seed": "none"},
        plugins,
    )
    assert background.config == BackgroundReplacementConfig(
        background_prompt="light grey studio", padding=0.2, shadow=False, seed=None
    )


@pytest.mark.parametrize(
    ("operation", "options", "message"),
    [
        ("optimize", {"maxSize": "5"}, r"--option maxSize: Input should be greater than or equal to 16"),
        ("optimize", {"format": "gif"}, r"--option format: Input should be 'webp', 'jpg', 'png' or 'avif'"),
        ("optimize", {"maxsize": "800"}, r"--option maxsize: optimize has no such option; known options: quality, "),
        ("enhance", {"enhancementLevel": "eleven"}, r"--option enhancementLevel: Input should be a valid integer"),
        ("background", {}, r"--option backgroundPrompt=\.\.\. is required for background"),
        ("background", {"backgroundPrompt": "white", "padding": "0.9"}, r"--option padding: Input should be less"),
        ("resize", {}, r"unknown operation 'resize'; expected one of: optimize, enhance, background"),
    ],
)
def test_bad_options_name_the_option(
    plugins: PluginRegistry, operation: str, options: dict[str, str], message: str
) -> None:
    with pytest.raises(BatchError, match=message):
        resolve_operation(operation, options, plugins)


def test_an_operation_the_settings_cannot_run_says_why(plugins: PluginRegistry) -> None:
    with pytest.raises(BatchError, match="generative background replacement needs a remote image model"):
        resolve_operation("background", {"backgroundPrompt": "beach", "mode": "generative"}, plugins)


def test_a_disabled_plugin_is_refused(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    settings.plugin_settings["ai-playground"] = {"enabled": False}
    plugins = default_registry(settings, provider=None)
    with pytest.raises(BatchError, match="plugin 'ai-playground' is disabled"):
        resolve_operation("optimize", {}, plugins)
