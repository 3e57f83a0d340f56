"""The plugin interface: a plugin says what one image becomes, and knows nothing of jobs or HTTP."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, ParamSpec, Protocol, TypedDict, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from capability_service.core.config import Settings
from capability_service.imaging.types import EncodedImage
from capability_service.providers.base import ImageEditProvider

if TYPE_CHECKING:
    from capability_service.marketplaces.ozon import OzonSellerClient
    from capability_service.sources.fetch import SourceFetcher

P = ParamSpec("P")
T = TypeVar("T")


class ProcessingMode(StrEnum):
    # Work is submitted as a job and runs in the background; callers poll or stream progress.
    async_job = "async_job"
    # One request in, one result out, answered in the same HTTP exchange.
    sync = "sync"


class DecodeLimits(TypedDict):
    """What every pipeline is allowed to decode: the image settings, in the names the options take."""

    max_pixels: int
    max_frames: int
    timeout_seconds: float


def decode_limits(settings: Settings) -> DecodeLimits:
    return DecodeLimits(
        max_pixels=settings.max_image_pixels,
        max_frames=settings.max_image_frames,
        timeout_seconds=settings.image_decode_timeout_seconds,
    )


class CamelModel(BaseModel):
    """Config models take the front end's camelCase names and also accept snake_case."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)


class CpuRunner(Protocol):
    """Runs a blocking, CPU-bound function off the event loop (thread or process pool)."""

    def __call__(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Awaitable[T]: ...


class SourceReader(Protocol):
    """Reads an extra input a config points to (e.g. a background image URL) through the source policy."""

    async def __call__(self, url: str) -> bytes: ...


class ImageWarning(BaseModel):
    """Advice about a result that succeeded, for the front end to show beside it.

    An image's metadata lists them under `warnings` (`[]` when there is nothing to say). `code` is stable
    and machine-readable; `message` says what happened and what to do, in words a seller understands.
    The remaining fields depend on the code:

    - `product_upscaled`: the product was enlarged `product_scale` times (canvas pixels per source
      pixel), more than `limit` (`PRODUCT_SCALE_WARNING`); it will look soft, a larger photo fixes it.
    """

    model_config = ConfigDict(frozen=True)

    code: str
    message: str
    product_scale: float | None = None
    limit: float | None = None

    def as_metadata(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


@dataclass(frozen=True, slots=True)
class ProcessContext:
    """What a plugin may use while it processes one image; built by the job engine per image."""

    run_cpu: CpuRunner
    read_source: SourceReader


@dataclass(frozen=True, slots=True)
class PluginHealth:
    healthy: bool
    detail: str | None = None


class PluginOptions(BaseModel):
    """A plugin's settings from `config/plugins.yaml`; plugins with more settings subclass it.

    Values may come from `${VAR}` expansion as text: pydantic reads "false" or "3" as the field's type.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True


@dataclass(slots=True)
class PluginDeps:
    """Long-lived, shared services handed to plugins at start-up."""

    settings: Settings
    provider: ImageEditProvider | None = None
    options: dict[str, Any] = field(default_factory=dict)
    # For plugins that read from outside: the guarded source fetcher and the Ozon Seller API client.
    fetcher: SourceFetcher | None = None
    ozon: OzonSellerClient | None = None


class PluginDisabled(Exception):
    """The plugin is switched off or lacks what it needs; the message is the reason (503)."""


class OperationUnavailable(Exception):
    """The operation cannot run with this config here and now (e.g. no AI key); the message says why (503)."""


class InvalidConfig(Exception):
    """An operation's config is malformed (400); `field` names the offending field."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason

    @classmethod
    def from_validation(cls, exc: ValidationError) -> InvalidConfig:
        """The first problem pydantic found, with its field path (`maxSize`, `background.colour`)."""
        error = exc.errors()[0]
        return cls(".".join(str(part) for part in error["loc"]), error["msg"])


class BasePlugin(ABC):
    """One capability. Subclasses set the class attributes and implement the operations they list.

    A plugin instance is shared by every request and job: it must keep no per-request state.
    """

    name: ClassVar[str]
    display_name: ClassVar[str]
    category: ClassVar[str]
    processing_mode: ClassVar[ProcessingMode]
    # operation name -> the pydantic model of its config
    config_models: ClassVar[Mapping[str, type[BaseModel]]]
    options_model: ClassVar[type[PluginOptions]] = PluginOptions

    def __init__(self, deps: PluginDeps) -> None:
        """Raises pydantic's `ValidationError` when the plugin's settings are invalid."""
        self.deps = deps
        self.options = self.options_model.model_validate(deps.options)
        self.enabled = self.options.enabled

    @property
    def disabled_reason(self) -> str | None:
        if not self.enabled:
            return f"plugin {self.name!r} is disabled in the plugin configuration"
        return None

    def ensure_enabled(self) -> None:
        reason = self.disabled_reason
        if reason:
            raise PluginDisabled(reason)

    def validate(self, operation: str, config: Mapping[str, Any]) -> BaseModel:
        """Parse and check an operation's config; raises `KeyError` or pydantic's `ValidationError`."""
        model = self.config_models[operation]
        return model.model_validate(dict(config))

    def operation_unavailable(self, operation: str, config: BaseModel) -> str | None:
        """Why this operation cannot run with this config right now (e.g. no AI key), else None."""
        return None

    def cacheable(self, operation: str, config: BaseModel) -> bool:
        """Whether the same source through this config always gives the same result (reusable)."""
        return True

    def prepare(self, operation: str, config: Mapping[str, Any]) -> BaseModel:
        """The one way in for a request, job or synchronous: enabled, config valid, runnable here.

        Raises `PluginDisabled`, `InvalidConfig` or `OperationUnavailable`, which the API maps to 503,
        400 and 503.
        """
        self.ensure_enabled()
        try:
            parsed = self.validate(operation, config)
        except ValidationError as exc:
            raise InvalidConfig.from_validation(exc) from None
        reason = self.operation_unavailable(operation, parsed)
        if reason:
            raise OperationUnavailable(reason)
        return parsed

    @abstractmethod
    async def process(self, operation: str, config: BaseModel, source: bytes, ctx: ProcessContext) -> EncodedImage:
        """Turn one source image into one result; raise `ImageError`/`ProviderError` for this image."""

    async def health_check(self) -> PluginHealth:
        return PluginHealth(healthy=self.enabled, detail=self.disabled_reason)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "display_name": self.display_name,
            "category": self.category,
            "processing_mode": self.processing_mode.value,
            "enabled": self.enabled,
            "operations": sorted(self.config_models),
        }
