"""The `image-compress` plugin: one uploaded image in, the compressed image out, synchronously."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from pydantic import BaseModel, Field

from capability_service.imaging.optimize import optimize
from capability_service.imaging.types import EncodedImage
from capability_service.plugins.ai_playground.configs import BatchOptimizationConfig
from capability_service.plugins.base import BasePlugin, ProcessContext, ProcessingMode


# A batch optimization's fields, with a larger default size: one upload is kept sharper.
class CompressConfig(BatchOptimizationConfig):
    """Form fields of `POST /image/compress` (camelCase, as the front end sends them)."""

    # Longest side of the result; the image is never upscaled.
    max_size: int = Field(4096, ge=16, le=10_000)


class ImageCompressPlugin(BasePlugin):
    name: ClassVar[str] = "image-compress"
    display_name: ClassVar[str] = "Image Compress"
    category: ClassVar[str] = "optimization"
    processing_mode: ClassVar[ProcessingMode] = ProcessingMode.sync
    config_models: ClassVar[Mapping[str, type[BaseModel]]] = {"compress": CompressConfig}

    async def process(self, operation: str, config: BaseModel, source: bytes, ctx: ProcessContext) -> EncodedImage:
        """Resize and re-encode the upload off the event loop; `ImageError` if it cannot be read."""
        assert isinstance(config, CompressConfig)
        options = config.options(self.deps.settings)
        return await ctx.run_cpu(optimize, source, options)
