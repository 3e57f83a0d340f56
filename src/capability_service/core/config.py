"""Service settings: environment variables and `.env`, plus plugin settings from a YAML file.

The variable names are part of the contract with the front end (see the README); each field's
name upper-cased is its environment variable.
"""

from __future__ import annotations

import os
import re
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from limits import parse
from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from capability_service.core.security import parse_api_key

# The key that works out of the box in development. Production refuses to start with it.
DEFAULT_DEV_API_KEY = "dev-key-change-me"

_VAR_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """A setting is missing or invalid; the message names the setting."""


class Environment(StrEnum):
    development = "development"
    production = "production"


def http_base_url(value: str) -> str:
    """`value` as a base URL without its trailing slash; `ValueError` unless it is http(s) with a host."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{value!r} is not an http(s) URL with a host, such as https://images.example.com")
    if parts.query or parts.fragment:
        raise ValueError(f"{value!r} must not carry a query or fragment: give the base URL only")
    return value.strip().rstrip("/")


def _split_csv(value: Any) -> Any:
    # Lists arrive from the environment as "a,b,c"; keep real lists (from code or YAML) as they are.
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


CsvList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    """Everything the service reads from its environment."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False)

    environment: Environment = Environment.development
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # text: `time level logger [context]: message`; json: one JSON object per line.
    log_format: Literal["text", "json"] = "text"

    # Operations: the bearer token `GET /metrics` requires (unset: open, so keep it off public networks),
    # and the directory in which the processes of one host share their metrics. prometheus-client reads
    # PROMETHEUS_MULTIPROC_DIR from the process environment when it is imported; it is a setting here
    # only so that a value in `.env`, which never reaches that environment, is refused, not ignored.
    metrics_token: SecretStr | None = None
    prometheus_multiproc_dir: Path | None = None

    # Security: `tenant:key` pairs or bare keys (tenant `default`)
    api_keys: CsvList = Field(default_factory=lambda: [DEFAULT_DEV_API_KEY])
    cors_origins: CsvList = Field(default_factory=lambda: ["http://localhost:3000"])

    # Remote image model (Gemini generateContent protocol by default)
    ai_provider: Literal["gemini", "openai"] = "gemini"
    ai_api_base: str = "https://generativelanguage.googleapis.com/v1beta"
    ai_api_key: SecretStr | None = None
    ai_model: str = "models/gemini-2.5-flash-image"
    # Google's own endpoint takes `x-goog-api-key`; most proxies want `Authorization: Bearer`.
    ai_auth_scheme: Literal["x-goog-api-key", "bearer"] = "x-goog-api-key"
    ai_target_width: int = Field(1500, ge=64, le=8192)
    ai_target_height: int = Field(2000, ge=64, le=8192)
    ai_default_temperature: float = Field(0.5, ge=0.0, le=2.0)
    ai_timeout_seconds: float = Field(120.0, gt=0)
    ai_max_concurrency: int = Field(4, ge=1, le=64)
    ai_max_retries: int = Field(3, ge=0, le=10)
    # Largest answer read from the remote model (an image answer is a few MB of base64); a larger one is a
    # per-image error, and is never held whole in memory.
    ai_max_response_bytes: int = Field(64 * 1024 * 1024, ge=64 * 1024)
    openai_api_base: str = "https://api.openai.com/v1"
    openai_api_key: SecretStr | None = None
    openai_model: str = "gpt-image-1"

    # Storage
    storage_backend: Literal["local", "s3"] = "local"
    local_storage_dir: Path = Path("data/results")
    # Unset: result URLs follow the address each request was made to (`Host`, and the scheme uvicorn takes
    # from trusted proxies). Set it when that address is not the one result readers use (see the README).
    public_base_url: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str = "auto"
    s3_bucket: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_public_base_url: str | None = None
    s3_presign_expires: int = Field(3600, ge=1, le=604800)
    # Seconds a result upload is retried, with backoff, while the storage is unreachable or failing
    # (5xx, disk full); never past the image's IMAGE_TIMEOUT_SECONDS. 0: one attempt.
    storage_retry_seconds: float = Field(30.0, ge=0, le=3600)

    # Sources
    source_allow_private_networks: bool = False
    source_allowed_hosts: CsvList = Field(default_factory=list)
    source_local_root: Path | None = None
    source_max_bytes: int = Field(50 * 1024 * 1024, ge=1024)
    source_connect_timeout_seconds: float = Field(5.0, gt=0)
    source_timeout_seconds: float = Field(30.0, gt=0)
    source_max_concurrency: int = Field(8, ge=1, le=64)
    # Of those downloads at once, the most from one host, so one slow host cannot stall every job's downloads.
    source_max_per_host: int = Field(4, ge=1, le=64)

    # Images
    max_image_pixels: int = Field(50_000_000, ge=1)
    # Frames an animated image may declare, and seconds one decode-and-process may take.
    max_image_frames: int = Field(300, ge=1, le=100_000)
    image_decode_timeout_seconds: float = Field(120.0, gt=0, le=3600)
    # Seconds one image of a job may take end to end (download, model call, processing, upload).
    image_timeout_seconds: float = Field(600.0, gt=0, le=86400)
    max_upload_bytes: int = Field(50 * 1024 * 1024, ge=1024)
    # Background replacement: enlarging the product more than this many times (canvas pixels per source
    # pixel) adds a `product_upscaled` warning to the image's metadata; the result is still made.
    product_scale_warning: float = Field(2.0, ge=1.0, le=100.0)
    # Largest job submission body: data: URIs make it big; larger batches should pass URLs instead.
    max_job_request_bytes: int = Field(200 * 1024 * 1024, ge=1024)
    # Job submissions above LARGE_BODY_BYTES are read at most MAX_CONCURRENT_LARGE_BODIES at once per process
    # (reading one costs memory in proportion); one that gets no turn within LARGE_BODY_WAIT_SECONDS is a 503.
    large_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    max_concurrent_large_bodies: int = Field(2, ge=1, le=1024)
    large_body_wait_seconds: float = Field(10.0, ge=0, le=600)

    # Jobs
    job_backend: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    max_images_per_job: int = Field(100, ge=1, le=10_000)
    # Accepted for older set-ups and unused: images are scheduled one by one, fairly between tenants
    # (MAX_IMAGES_IN_FLIGHT, TENANT_MAX_IMAGES_IN_FLIGHT), not job by job.
    max_concurrent_jobs: int = Field(2, ge=1, le=256)
    # Memory mode: images this process works on at once, over all jobs. About twice AI_MAX_CONCURRENCY, so
    # image work overlaps the remote model's waits; CPU work is bounded separately by CPU_WORKERS, so more
    # images in flight costs only their source bytes.
    max_images_in_flight: int = Field(8, ge=1, le=256)
    # Most images one tenant may have queued or running at once (0: its fair share of the slots only).
    tenant_max_images_in_flight: int = Field(0, ge=0, le=10_000)
    # Most unfinished jobs one tenant may have at once; beyond it submit answers 429 (0: no limit).
    tenant_max_live_jobs: int = Field(0, ge=0, le=1_000_000)

    # Reuse a stored result for the same source bytes, config and pipeline version; entries expire after the TTL.
    result_cache: bool = True
    result_cache_ttl_seconds: int = Field(7 * 24 * 3600, ge=60)

    # Quotas: `limits`-style rates ("60/minute", "1000/hour"), per tenant and per user inside it; unset: none.
    rate_limit_submits: str | None = None
    rate_limit_images: str | None = None
    rate_limit_user_submits: str | None = None
    rate_limit_user_images: str | None = None
    job_queue_size: int = Field(100, ge=1)
    # Total size of the sources that unfinished jobs of this process hold (data: URIs are kept until
    # the job ends); beyond it submit answers 503.
    max_pending_source_bytes: int = Field(1 << 30, ge=1024)
    # Redis mode: images waiting for a worker across all instances; beyond it submit answers 503.
    max_queued_images: int = Field(10_000, ge=1)
    job_result_ttl_seconds: int = Field(3600, ge=1)
    job_store_max_jobs: int = Field(10_000, ge=1)
    shutdown_grace_seconds: float = Field(30.0, ge=0)
    # Seconds between SSE heartbeat comments, so proxies keep idle streams open.
    sse_heartbeat_seconds: float = Field(15.0, gt=0, le=300)
    # Redis mode: images a `serve` process works on itself (0: API only, workers run apart), images a
    # `capability-service worker` works on at once, attempts per image, and how long a worker may stay
    # silent before its images are handed to another one.
    serve_local_workers: int = Field(0, ge=0, le=256)
    worker_concurrency: int = Field(2, ge=1, le=256)
    job_max_attempts: int = Field(3, ge=2, le=20)
    job_heartbeat_seconds: int = Field(15, ge=2, le=3600)
    cpu_executor: Literal["thread", "process"] = "thread"
    # Niceness of the image-work threads, so the event loop wins a contended core (0 to 19).
    cpu_nice: int = Field(10, ge=0, le=19)
    cpu_workers: int = Field(default_factory=lambda: os.cpu_count() or 2, ge=1, le=256)

    # Ozon Seller API (the `ozon-download` plugin). Credentials sent per request in X-Ozon-Client-Id /
    # X-Ozon-Api-Key take precedence; an empty value means unset.
    ozon_api_base: str = "https://api-seller.ozon.ru"
    ozon_client_id: str | None = None
    ozon_api_key: SecretStr | None = None

    plugins_config: Path = Path("config/plugins.yaml")

    # The try-it page at /playground: unset means on in development and off in production.
    playground_enabled: bool | None = None

    _split = field_validator("api_keys", "cors_origins", "source_allowed_hosts", mode="before")(_split_csv)

    @field_validator("ozon_api_base", mode="before")
    @classmethod
    def _default_base_when_empty(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return "https://api-seller.ozon.ru"
        return value

    @field_validator(
        "rate_limit_submits", "rate_limit_images", "rate_limit_user_submits", "rate_limit_user_images", mode="after"
    )
    @classmethod
    def _a_rate(cls, value: str | None) -> str | None:
        if not value or not value.strip():
            return None
        try:
            parse(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a rate such as '60/minute' or '1000 per hour'") from None
        return value.strip()

    @field_validator("*", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any, info: ValidationInfo) -> Any:
        # For every optional setting (default None): `AI_API_KEY=` in a copied .env, a compose file's
        # `${VAR:-}` or an empty Kubernetes secret means "not configured", as if the variable were absent,
        # never an empty key, an empty bucket name or the current directory.
        if info.field_name is None or cls.model_fields[info.field_name].default is not None:
            return value
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, str):
            return value.strip() or None
        return value

    @field_validator("public_base_url", "s3_public_base_url", "s3_endpoint_url", mode="after")
    @classmethod
    def _a_base_url(cls, value: str | None) -> str | None:
        return None if value is None else http_base_url(value)

    @field_validator("ai_api_base", "openai_api_base", mode="after")
    @classmethod
    def _an_api_base(cls, value: str) -> str:
        return http_base_url(value)

    @field_validator("redis_url", mode="after")
    @classmethod
    def _a_redis_url(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"{value!r} is not a Redis URL: use redis://host:port/db, rediss://... or unix://...")
        return value

    @model_validator(mode="after")
    def _refuse_default_keys_in_production(self) -> Settings:
        keys = [parse_api_key(entry).key for entry in self.api_keys]
        if self.environment is Environment.production:
            if not keys:
                raise ValueError("API_KEYS must name at least one key when ENVIRONMENT=production")
            if DEFAULT_DEV_API_KEY in keys:
                raise ValueError("API_KEYS still holds the development default key; set your own keys for production")
        if any(len(key) < 8 for key in keys):
            raise ValueError("API_KEYS: every key must be at least 8 characters long")
        if len(set(keys)) != len(keys):
            raise ValueError("API_KEYS: a key is listed twice; every key must belong to one tenant")
        if self.storage_backend == "s3" and not self.s3_bucket:
            raise ValueError("S3_BUCKET is required when STORAGE_BACKEND=s3")
        if self.metrics_token is not None and len(self.metrics_token.get_secret_value()) < 16:
            raise ValueError("METRICS_TOKEN must be at least 16 characters long (or unset for an open /metrics)")
        in_environment = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if self.prometheus_multiproc_dir is not None and (
            not in_environment or Path(in_environment) != self.prometheus_multiproc_dir
        ):
            raise ValueError(
                "PROMETHEUS_MULTIPROC_DIR must be set in the process environment (prometheus-client reads it "
                "before settings are loaded); a value in .env or passed in code has no effect"
            )
        return self

    @property
    def playground_on(self) -> bool:
        """Whether `/playground` is served: `PLAYGROUND_ENABLED` when set, else only in development."""
        if self.playground_enabled is not None:
            return self.playground_enabled
        return self.environment is Environment.development

    def secret_values(self) -> list[str]:
        """Every credential these settings hold, for the log filter that keeps them out of logs."""
        values = [parse_api_key(entry).key for entry in self.api_keys]
        secrets = (
            self.ai_api_key,
            self.openai_api_key,
            self.s3_secret_access_key,
            self.ozon_api_key,
            self.metrics_token,
        )
        values += [secret.get_secret_value() for secret in secrets if secret is not None]
        return [value for value in values if value]

    @cached_property
    def plugin_settings(self) -> dict[str, dict[str, Any]]:
        """Per-plugin settings from `PLUGINS_CONFIG` (a missing file means defaults for every plugin)."""
        return load_plugin_config(self.plugins_config)


def expand_vars(text: str, environ: dict[str, str] | None = None) -> str:
    """Expand `${VAR}` and `${VAR:-default}`; an unset variable without a default is an error."""
    env = os.environ if environ is None else environ

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"plugin config refers to ${{{name}}}, which is not set (use ${{{name}:-default}})")

    return _VAR_PATTERN.sub(replace, text)


def _expand_tree(node: Any, environ: dict[str, str] | None) -> Any:
    # Expanded after parsing, so comments are left alone and a value from the environment can never
    # change the YAML's structure; each plugin's options model reads the texts as its field types.
    if isinstance(node, dict):
        return {key: _expand_tree(value, environ) for key, value in node.items()}
    if isinstance(node, list):
        return [_expand_tree(value, environ) for value in node]
    return expand_vars(node, environ) if isinstance(node, str) else node


def load_plugin_config(path: Path, environ: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"PLUGINS_CONFIG {path}: not valid YAML: {exc}") from exc
    plugins = data.get("plugins", {}) if isinstance(data, dict) else None
    if not isinstance(plugins, dict) or not all(isinstance(v, dict) for v in plugins.values()):
        raise ConfigError(f"PLUGINS_CONFIG {path}: expected a mapping `plugins: {{name: {{...}}}}`")
    return {str(name): _expand_tree(dict(values), environ) for name, values in plugins.items()}


def load_settings(**overrides: Any) -> Settings:
    """Build settings, turning pydantic's errors into one message that names each bad variable."""
    try:
        settings = Settings(**overrides)
        _ = settings.plugin_settings
    except ValidationError as exc:
        raise ConfigError("invalid settings: " + "; ".join(_problem(error) for error in exc.errors())) from None
    return settings


def _problem(error: Any) -> str:
    """One pydantic error as `SETTING: reason`, on one line (checks across settings name theirs)."""
    message = " ".join(str(error["msg"]).split())
    # pydantic prefixes what a validator raised; the reason is ours and reads better without it.
    message = message.removeprefix("Value error, ")
    field = ".".join(str(part) for part in error["loc"]).upper()
    return f"{field}: {message}" if field else message
