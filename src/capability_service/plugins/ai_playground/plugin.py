"""The `ai-playground` plugin: the three job types of the seller front end's AI Playground page."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from pydantic import BaseModel

from capability_service.imaging.enhance import enhance
from capability_service.imaging.optimize import optimize
from capability_service.imaging.types import EncodedImage
from capability_service.plugins.ai_playground import background
from capability_service.plugins.ai_playground.configs import (
    BackgroundReplacementConfig,
    BatchOptimizationConfig,
    ImageEnhancementConfig,
    JobType,
)
from capability_service.plugins.base import BasePlugin, PluginHealth, ProcessContext, ProcessingMode


class AiPlaygroundPlugin(BasePlugin):
    name: ClassVar[str] = "ai-playground"
    display_name: ClassVar[str] = "AI Playground"
    category: ClassVar[str] = "ai"
    processing_mode: ClassVar[ProcessingMode] = ProcessingMode.async_job
    config_models: ClassVar[Mapping[str, type[BaseModel]]] = {
        JobType.background_replacement.value: BackgroundReplacementConfig,
        JobType.batch_optimization.value: BatchOptimizationConfig,
        JobType.image_enhancement.value: ImageEnhancementConfig,
    }

    def operation_unavailable(self, operation: str, config: BaseModel) -> str | None:
        # Optimization, enhancement and composite replacement run locally; only the generative mode
        # has nothing to fall back on without a remote model.
        if (
            isinstance(config, BackgroundReplacementConfig)
            and config.mode == "generative"
            and self.deps.provider is None
        ):
            return "generative background replacement needs a remote image model: set AI_API_KEY"
        return None

    def cacheable(self, operation: str, config: BaseModel) -> bool:
        if not isinstance(config, BackgroundReplacementConfig):
            return True
        # A background image can change behind the same URL; a remote model paints anew each time
        # unless the seed pins it.
        if config.background_image_url is not None:
            return False
        uses_model = config.mode == "generative" or self.deps.provider is not None
        return not uses_model or config.seed is not None

    async def process(self, operation: str, config: BaseModel, source: bytes, ctx: ProcessContext) -> EncodedImage:
        if isinstance(config, BatchOptimizationConfig):
            return await ctx.run_cpu(optimize, source, config.options(self.deps.settings))
        if isinstance(config, ImageEnhancementConfig):
            return await ctx.run_cpu(enhance, source, config.options(self.deps.settings))
        if isinstance(config, BackgroundReplacementConfig):
            return await background.replace_background(config, source, ctx, self.deps)
        raise KeyError(operation)

    async def health_check(self) -> PluginHealth:
        if not self.enabled:
            return PluginHealth(healthy=False, detail=self.disabled_reason)
        if self.deps.provider is not None:
            report = await self.deps.provider.health()
            if not report.get("healthy", False):
                return PluginHealth(healthy=False, detail=str(report.get("detail", "remote model unhealthy")))
        return PluginHealth(healthy=True)
