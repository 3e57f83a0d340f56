"""Choosing the remote model from settings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from capability_service.core.config import Settings
from capability_service.providers.factory import create_provider
from capability_service.providers.gemini import GeminiProvider
from capability_service.providers.openai import OpenAIProvider


async def test_no_key_means_no_remote_model(make_settings: Callable[..., Settings]) -> None:
    assert create_provider(make_settings()) is None
    assert create_provider(make_settings(ai_provider="openai", ai_api_key="AIza-key-0123")) is None


async def test_gemini_from_settings(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(
        ai_api_key="AIza-key-0123",
        ai_api_base="https://proxy.example.com/v1beta/",
        ai_model="gemini-3-pro-image-preview",
        ai_auth_scheme="bearer",
        ai_max_concurrency=3,
    )
    provider: Any = create_provider(settings)
    try:
        assert isinstance(provider, GeminiProvider)
        assert provider.url == "https://proxy.example.com/v1beta/models/gemini-3-pro-image-preview:generateContent"
        assert provider.max_concurrency == 3
        assert "AIza-key-0123" not in repr(provider)
    finally:
        await provider.close()


async def test_openai_from_settings(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(ai_provider="openai", openai_api_key="sk-key-0123", ai_max_concurrency=2)
    provider: Any = create_provider(settings)
    try:
        assert isinstance(provider, OpenAIProvider)
        assert provider.edit_url == "https://api.openai.com/v1/images/edits"
        assert provider.model == "gpt-image-1" and provider.max_concurrency == 2
    finally:
        await provider.close()
