"""Settings: environment names of the contract, production refusals, plugin YAML with ${VAR}."""

from __future__ import annotations

from pathlib import Path

import pytest

from capability_service.core.config import (
    DEFAULT_DEV_API_KEY,
    ConfigError,
    expand_vars,
    load_plugin_config,
    load_settings,
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Run from an empty directory so a developer's .env cannot leak in.
    monkeypatch.chdir(tmp_path)
    for name in ("API_KEYS", "ENVIRONMENT", "MAX_IMAGES_PER_JOB", "CORS_ORIGINS", "STORAGE_BACKEND", "S3_BUCKET"):
        monkeypatch.delenv(name, raising=False)


def test_development_works_out_of_the_box_with_the_documented_key() -> None:
    settings = load_settings()
    assert settings.api_keys == [DEFAULT_DEV_API_KEY]
    assert settings.job_backend == "memory" and settings.storage_backend == "local"
    assert (settings.ai_target_width, settings.ai_target_height, settings.ai_default_temperature) == (1500, 2000, 0.5)
    assert settings.max_images_per_job == 100


def test_contract_names_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEYS", "key-one-123456, key-two-123456")
    monkeypatch.setenv("CORS_ORIGINS", "https://a.example,https://b.example")
    monkeypatch.setenv("MAX_IMAGES_PER_JOB", "7")
    monkeypatch.setenv("SOURCE_ALLOW_PRIVATE_NETWORKS", "true")
    settings = load_settings()
    assert settings.api_keys == ["key-one-123456", "key-two-123456"]
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.max_images_per_job == 7
    assert settings.source_allow_private_networks is True


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MAX_IMAGES_PER_JOB=9\n")
    assert load_settings().max_images_per_job == 9


@pytest.mark.parametrize("keys", [DEFAULT_DEV_API_KEY, "", f"real-key-123456,{DEFAULT_DEV_API_KEY}"])
def test_production_refuses_default_or_missing_keys(monkeypatch: pytest.MonkeyPatch, keys: str) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("API_KEYS", keys)
    with pytest.raises(ConfigError, match="API_KEYS"):
        load_settings()


def test_production_starts_with_real_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("API_KEYS", "a-real-secret-key")
    assert load_settings().environment.value == "production"


@pytest.mark.parametrize(
    ("name", "value"),
    [("MAX_IMAGES_PER_JOB", "lots"), ("MAX_IMAGES_PER_JOB", "0"), ("ENVIRONMENT", "staging"), ("JOB_BACKEND", "kafka")],
)
def test_invalid_settings_fail_naming_the_setting(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        load_settings()


def test_s3_backend_requires_a_bucket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_BACKEND", "s3")
    with pytest.raises(ConfigError, match="S3_BUCKET"):
        load_settings()


def test_plugin_yaml_expands_variables(tmp_path: Path) -> None:
    path = tmp_path / "plugins.yaml"
    path.write_text("plugins:\n  ai-playground:\n    enabled: ${ON}\n    note: ${MISSING:-fallback}\n")
    config = load_plugin_config(path, environ={"ON": "false"})
    # Texts: each plugin's options model reads them as its fields' types (tests/plugins/test_manager.py).
    assert config == {"ai-playground": {"enabled": "false", "note": "fallback"}}


def test_plugin_yaml_with_an_unset_variable_names_it(tmp_path: Path) -> None:
    path = tmp_path / "plugins.yaml"
    path.write_text("plugins:\n  x:\n    key: ${NOT_SET_ANYWHERE}\n")
    with pytest.raises(ConfigError, match="NOT_SET_ANYWHERE"):
        load_plugin_config(path, environ={})


@pytest.mark.parametrize("text", ["plugins: [1, 2]", "plugins:\n  a: 3\n", ": : :"])
def test_malformed_plugin_yaml_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "plugins.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="PLUGINS_CONFIG"):
        load_plugin_config(path)


def test_expand_vars_leaves_plain_text_alone() -> None:
    assert expand_vars("no variables $HOME here", environ={}) == "no variables $HOME here"


def test_shipped_plugin_config_loads() -> None:
    shipped = Path(__file__).parents[2] / "config" / "plugins.yaml"
    config = load_plugin_config(shipped, environ={})
    assert config["ai-playground"]["enabled"] == "true"
    assert config["image-compress"]["enabled"] == "true"


@pytest.mark.parametrize(
    ("environment", "enabled", "on"),
    [
        ("development", None, True),
        ("development", "false", False),
        ("production", None, False),
        ("production", "false", False),
        ("production", "true", True),
    ],
)
def test_the_playground_is_on_in_development_and_off_in_production_unless_enabled(
    monkeypatch: pytest.MonkeyPatch, environment: str, enabled: str | None, on: bool
) -> None:
    monkeypatch.setenv("ENVIRONMENT", environment)
    monkeypatch.setenv("API_KEYS", "a-real-secret-key")
    if enabled is None:
        monkeypatch.delenv("PLAYGROUND_ENABLED", raising=False)
    else:
        monkeypatch.setenv("PLAYGROUND_ENABLED", enabled)
    assert load_settings().playground_on is on


def test_operations_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    settings = load_settings()
    assert (settings.log_format, settings.metrics_token, settings.prometheus_multiproc_dir) == ("text", None, None)
    monkeypatch.setenv("LOG_FORMAT", "json")
    monkeypatch.setenv("METRICS_TOKEN", "a-long-enough-metrics-token")
    settings = load_settings()
    assert settings.log_format == "json"
    assert settings.metrics_token is not None
    assert "a-long-enough-metrics-token" in settings.secret_values()
    # Empty means unset, as `METRICS_TOKEN=` in a .env file would say.
    monkeypatch.setenv("METRICS_TOKEN", "")
    assert load_settings().metrics_token is None


@pytest.mark.parametrize(
    ("name", "value", "named"),
    [("LOG_FORMAT", "xml", "LOG_FORMAT"), ("METRICS_TOKEN", "short", "METRICS_TOKEN")],
)
def test_bad_operations_settings_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, named: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=named):
        load_settings()


def test_a_metrics_directory_only_in_dotenv_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # prometheus-client reads the real environment at import; a .env value would silently do nothing.
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    (tmp_path / ".env").write_text(f"PROMETHEUS_MULTIPROC_DIR={tmp_path / 'metrics'}\n")
    with pytest.raises(ConfigError, match="PROMETHEUS_MULTIPROC_DIR must be set in the process environment"):
        load_settings()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    assert load_settings().prometheus_multiproc_dir == tmp_path / "metrics"


def test_empty_optional_settings_are_unset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # As a copied .env leaves them: empty, or blank.
    (tmp_path / ".env").write_text("AI_API_KEY=\nOPENAI_API_KEY=' '\nS3_SECRET_ACCESS_KEY=\n", encoding="utf-8")
    for name in ("S3_ACCESS_KEY_ID", "OZON_CLIENT_ID", "OZON_API_KEY", "PUBLIC_BASE_URL", "SOURCE_LOCAL_ROOT"):
        monkeypatch.setenv(name, "")
    monkeypatch.setenv("PLAYGROUND_ENABLED", "")
    monkeypatch.setenv("RATE_LIMIT_SUBMITS", "")
    settings = load_settings()
    unset = (
        settings.ai_api_key,
        settings.openai_api_key,
        settings.s3_secret_access_key,
        settings.s3_access_key_id,
        settings.ozon_client_id,
        settings.ozon_api_key,
        settings.public_base_url,
        settings.source_local_root,
        settings.playground_enabled,
        settings.rate_limit_submits,
    )
    assert unset == (None,) * len(unset)
    assert settings.playground_on is True
    assert settings.secret_values() == [DEFAULT_DEV_API_KEY]


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("PUBLIC_BASE_URL", "images.example.com", "not an http(s) URL"),
        ("PUBLIC_BASE_URL", "https://images.example.com/?v=1", "query"),
        ("S3_ENDPOINT_URL", "r2.example.com", "not an http(s) URL"),
        ("AI_API_BASE", "generativelanguage.googleapis.com", "not an http(s) URL"),
        ("REDIS_URL", "localhost:6379", "not a Redis URL"),
        ("API_KEYS", "shop-a:short", "at least 8 characters"),
    ],
)
def test_a_wrong_setting_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, words: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as raised:
        load_settings()
    message = str(raised.value)
    assert message.startswith(f"invalid settings: {name}: ") and words in message
    assert "\n" not in message and "Value error" not in message


def test_base_urls_lose_their_trailing_slash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://images.example.com/shop/")
    assert load_settings().public_base_url == "https://images.example.com/shop"
