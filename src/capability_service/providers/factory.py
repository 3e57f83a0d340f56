"""Choose the remote image model from settings; None when no key is configured."""

from __future__ import annotations

from capability_service.core.config import Settings
from capability_service.providers.base import ImageEditProvider


def create_provider(settings: Settings) -> ImageEditProvider | None:
    if settings.ai_provider == "openai":
        if settings.openai_api_key is None:
            return None
        from capability_service.providers.openai import OpenAIProvider

        return OpenAIProvider.from_settings(settings)
    if settings.ai_api_key is None:
        return None
    from capability_service.providers.gemini import GeminiProvider

    return GeminiProvider.from_settings(settings)


def key_setting(settings: Settings) -> str:
    """The setting whose key turns the remote model of `AI_PROVIDER` on."""
    return "OPENAI_API_KEY" if settings.ai_provider == "openai" else "AI_API_KEY"
