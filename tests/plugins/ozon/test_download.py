"""The ozon-download plugin on its own: settings, credentials, names inside the archive."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from capability_service.core.config import ConfigError, Settings
from capability_service.marketplaces.ozon_errors import OzonCredentialsMissing
from capability_service.plugins.ozon.download import OzonDownloadPlugin, safe_name
from capability_service.services import build_services


def plugin_with(make_settings: Callable[..., Settings], tmp_path: Path, **values: Any) -> OzonDownloadPlugin:
    options = values.pop("options", {})
    config = tmp_path / "plugins.yaml"
    config.write_text(json.dumps({"plugins": {"ozon-download": options}}))
    services = build_services(make_settings(plugins_config=config, **values))
    plugin = services.plugins.get("ozon-download")
    assert isinstance(plugin, OzonDownloadPlugin)
    return plugin


def test_defaults_are_those_of_the_plugin_config(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    plugin = plugin_with(make_settings, tmp_path)
    assert (plugin.options.max_workers, plugin.options.timeout_sec, plugin.options.default_field) == (5, 20, "offer_id")
    assert plugin.client.base_url == "https://api-seller.ozon.ru"


def test_the_shipped_plugin_config_gives_the_documented_defaults(make_settings: Callable[..., Settings]) -> None:
    services = build_services(make_settings(plugins_config=Path("config/plugins.yaml")))
    described = services.plugins.get("ozon-download").describe()
    assert described["settings"] == {
        "max_workers": 5,
        "timeout_sec": 20.0,
        "default_field": "offer_id",
        "publish_wait_sec": 120.0,
    }


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"max_workers": 0}, "max_workers"),
        ({"default_field": "barcode"}, "default_field"),
        ({"timeout_sec": -1}, "timeout_sec"),
        # A misspelt setting is refused, not silently ignored.
        ({"max_worker": 3}, "max_worker: Extra inputs"),
    ],
)
def test_bad_plugin_settings_stop_the_start_with_a_clear_message(
    make_settings: Callable[..., Settings], tmp_path: Path, options: dict[str, Any], words: str
) -> None:
    with pytest.raises(ConfigError, match=f"plugin 'ozon-download': {words}"):
        plugin_with(make_settings, tmp_path, options=options)


def test_credentials_from_the_request_win_and_are_never_mixed(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    plugin = plugin_with(make_settings, tmp_path, ozon_client_id="111", ozon_api_key="configured-key")
    assert plugin.credentials(None, None).client_id == "111"
    chosen = plugin.credentials("222", "request-key")
    assert chosen.client_id == "222" and chosen.api_key.get_secret_value() == "request-key"
    assert "request-key" not in repr(chosen)
    with pytest.raises(OzonCredentialsMissing, match="both"):
        plugin.credentials("222", None)


def test_empty_settings_mean_unset(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    plugin = plugin_with(make_settings, tmp_path, ozon_client_id="", ozon_api_key="  ", ozon_api_base="")
    assert not plugin.credentials_configured
    assert plugin.client.base_url == "https://api-seller.ozon.ru"
    with pytest.raises(OzonCredentialsMissing, match="OZON_CLIENT_ID"):
        plugin.credentials(None, None)


@pytest.mark.parametrize(
    ("offer_id", "expected"),
    [("ABC-1", "ABC-1"), ("a/b\\c", "a_b_c"), ("..", "9"), ("../x", "_x"), ("Платье:синее", "Платье_синее"), ("", "9")],
)
def test_offer_ids_become_safe_folder_names(offer_id: str, expected: str) -> None:
    assert safe_name(offer_id, "9") == expected
