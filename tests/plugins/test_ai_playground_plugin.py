"""What the AI Playground plugin lets the result cache reuse."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from capability_service.core.config import Settings
from capability_service.plugins.ai_playground.plugin import AiPlaygroundPlugin
from capability_service.plugins.base import PluginDeps
from capability_service.providers.factory import create_provider


@pytest.mark.parametrize(
    ("config", "with_model", "reusable"),
    [
        ({"backgroundPrompt": "white"}, False, True),
        ({"backgroundPrompt": "white"}, True, False),
        ({"backgroundPrompt": "white", "seed": 7}, True, True),
        ({"backgroundPrompt": "sea", "mode": "generative"}, True, False),
        ({"backgroundPrompt": "sea", "mode": "generative", "seed": 1}, True, True),
        ({"backgroundPrompt": "x", "backgroundImageUrl": "https://cdn.example/b.jpg"}, False, False),
    ],
)
def test_a_remote_model_without_a_seed_is_never_reused(
    make_settings: Callable[..., Settings], config: dict[str, object], with_model: bool, reusable: bool
) -> None:
    settings = make_settings(ai_api_key="AIza-test-key-000000000") if with_model else make_settings()
    plugin = AiPlaygroundPlugin(PluginDeps(settings=settings, provider=create_provider(settings)))
    parsed = plugin.validate("background_replacement", config)
    assert plugin.cacheable("background_replacement", parsed) is reusable


def test_optimization_and_enhancement_are_reusable(make_settings: Callable[..., Settings]) -> None:
    plugin = AiPlaygroundPlugin(PluginDeps(settings=make_settings()))
    for job_type in ("batch_optimization", "image_enhancement"):
        assert plugin.cacheable(job_type, plugin.validate(job_type, {}))
