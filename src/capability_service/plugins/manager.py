"""The plugin registry, keyed by plugin name."""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import ValidationError

from capability_service.core.config import ConfigError, Settings
from capability_service.marketplaces.ozon import OzonSellerClient
from capability_service.plugins.base import BasePlugin, PluginDeps, ProcessingMode
from capability_service.providers.base import ImageEditProvider
from capability_service.sources.fetch import SourceFetcher


class PluginRegistry:
    def __init__(self) -> None:
        self._plugins: dict[str, BasePlugin] = {}

    def register(self, plugin: BasePlugin) -> None:
        if plugin.name in self._plugins:
            raise ValueError(f"plugin {plugin.name!r} is registered twice")
        self._plugins[plugin.name] = plugin

    def get(self, name: str) -> BasePlugin:
        return self._plugins[name]

    def for_job_type(self, job_type: str) -> BasePlugin | None:
        """The plugin that runs jobs of this type: an async-job plugin declaring it as an operation."""
        for plugin in self._plugins.values():
            if plugin.processing_mode is ProcessingMode.async_job and job_type in plugin.config_models:
                return plugin
        return None

    def job_types(self) -> list[str]:
        return sorted(
            operation
            for plugin in self._plugins.values()
            if plugin.processing_mode is ProcessingMode.async_job
            for operation in plugin.config_models
        )

    def __contains__(self, name: object) -> bool:
        return name in self._plugins

    def __iter__(self) -> Iterator[BasePlugin]:
        return iter(self._plugins.values())


def default_registry(
    settings: Settings,
    provider: ImageEditProvider | None,
    *,
    fetcher: SourceFetcher | None = None,
    ozon: OzonSellerClient | None = None,
) -> PluginRegistry:
    """Register every built-in plugin with shared deps and its own options from the plugin YAML.

    The `ozon-download` plugin is registered when a source fetcher and an Ozon client are given.
    """
    from capability_service.plugins.ai_playground.plugin import AiPlaygroundPlugin
    from capability_service.plugins.image_compress import ImageCompressPlugin
    from capability_service.plugins.ozon.download import OzonDownloadPlugin

    classes: list[type[BasePlugin]] = [AiPlaygroundPlugin, ImageCompressPlugin]
    if fetcher is not None and ozon is not None:
        classes.append(OzonDownloadPlugin)
    registry = PluginRegistry()
    for cls in classes:
        options = settings.plugin_settings.get(cls.name, {})
        deps = PluginDeps(settings=settings, provider=provider, options=options, fetcher=fetcher, ozon=ozon)
        try:
            plugin = cls(deps)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"PLUGINS_CONFIG {settings.plugins_config}, plugin {cls.name!r}: {problems}") from None
        registry.register(plugin)
    return registry
