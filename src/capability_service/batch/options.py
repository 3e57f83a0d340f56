"""The command's operation and `--option key=value` pairs, validated by the job API's own config models."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from capability_service.plugins.base import BasePlugin, InvalidConfig, OperationUnavailable, PluginDisabled
from capability_service.plugins.manager import PluginRegistry

# The command's short names for the job types of the job API.
OPERATIONS: dict[str, str] = {
    "optimize": "batch_optimization",
    "enhance": "image_enhancement",
    "background": "background_replacement",
}

# Values that mean "no value" for an optional option (`--option seed=none`).
_NONE_WORDS = frozenset({"none", "null"})


class BatchError(Exception):
    """The command cannot run as given (an option, an input, a setting); the message says what to change."""


@dataclass(frozen=True, slots=True)
class Operation:
    """What every image of a run becomes: the job type, its plugin and its validated config."""

    name: str
    job_type: str
    plugin: BasePlugin
    config: BaseModel

    @property
    def extension(self) -> str:
        """The file extension of every result, from the config's `format`."""
        fmt = getattr(self.config, "format", None)
        if not isinstance(fmt, str):
            raise BatchError(f"the {self.name} operation has no output format")
        return "." + fmt


def parse_pairs(pairs: Sequence[str]) -> dict[str, str]:
    """`["maxSize=800", "format=jpg"]` -> `{"maxSize": "800", "format": "jpg"}`; the last of a repeated key wins."""
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise BatchError(f"--option {pair!r}: expected key=value, e.g. --option maxSize=1200")
        options[key] = value
    return options


def _option_names(model: type[BaseModel]) -> dict[str, str]:
    """Every accepted spelling of each field (camelCase alias and snake_case name) -> the alias."""
    names: dict[str, str] = {}
    for name, field in model.model_fields.items():
        alias = field.alias or name
        names[name] = alias
        names[alias] = alias
    return names


def known_options(model: type[BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]


def config_values(operation: str, model: type[BaseModel], raw: Mapping[str, str]) -> dict[str, Any]:
    """`raw` keyed by the model's camelCase names; unknown options are refused rather than ignored."""
    names = _option_names(model)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        alias = names.get(key)
        if alias is None:
            known = ", ".join(known_options(model))
            raise BatchError(f"--option {key}: {operation} has no such option; known options: {known}")
        field = model.model_fields[_field_name(model, alias)]
        # Text from the command line: pydantic's lax mode turns "800", "0.1" and "true" into their types;
        # only an explicit "none" for an optional field needs help.
        values[alias] = None if value.strip().lower() in _NONE_WORDS and not field.is_required() else value
    return values


def _field_name(model: type[BaseModel], alias: str) -> str:
    for name, field in model.model_fields.items():
        if (field.alias or name) == alias:
            return name
    raise KeyError(alias)


def resolve_operation(name: str, raw: Mapping[str, str], plugins: PluginRegistry) -> Operation:
    """The plugin and validated config for `name` (optimize, enhance, background) with options `raw`.

    The config goes through the plugin's `prepare`, the same entry as `POST /ai/job`: enabled, valid,
    runnable with these settings.
    """
    job_type = OPERATIONS.get(name)
    if job_type is None:
        raise BatchError(f"unknown operation {name!r}; expected one of: {', '.join(OPERATIONS)}")
    plugin = plugins.for_job_type(job_type)
    if plugin is None:
        raise BatchError(f"no plugin runs {job_type} jobs")
    values = config_values(name, plugin.config_models[job_type], raw)
    try:
        config = plugin.prepare(job_type, values)
    except InvalidConfig as exc:
        if exc.reason == "Field required":
            raise BatchError(f"--option {exc.field}=... is required for {name}") from None
        raise BatchError(f"--option {exc.field}: {exc.reason}" if exc.field else exc.reason) from None
    except (PluginDisabled, OperationUnavailable) as exc:
        raise BatchError(str(exc)) from None
    return Operation(name=name, job_type=job_type, plugin=plugin, config=config)
