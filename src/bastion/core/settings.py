"""Service settings. Precedence, lowest to highest, written once here:

    defaults  <  bastion.toml  <  environment (BASTION_…)  <  command line

`bastion.toml` is read from `$BASTION_CONFIG`, else `./bastion.toml`, else `$BASTION_HOME/bastion.toml`.
Nested keys in the environment use `__`: `BASTION_MODERATION__DEFAULT_MODEL=bastion-lists`.
Command-line options reach `Settings(**overrides)`, the highest-priority source.
"""

from __future__ import annotations

import ipaddress
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from bastion.core.errors import ConfigError
from bastion.core.taxonomy import check_category
from bastion.gateway.settings import GatewaySettings
from bastion.llm.settings import LLMSettings
from bastion.privacy.settings import PrivacySettings

DEFAULT_MODERATION_MODEL = "bastion-embedded"
OPENAI_MODEL_ALIASES = (
    "omni-moderation-latest",
    "omni-moderation-2024-09-26",
    "text-moderation-latest",
    "text-moderation-stable",
)


class Strict(BaseModel):
    """Base for option models: unknown keys are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class BackendSpec(Strict):
    """One moderation backend inside a moderation model: which plugin, with which options."""

    plugin: str = Field(description="Registered moderation backend name, e.g. 'embedded' or 'lists'.")
    options: dict[str, Any] = Field(default_factory=dict, description="Options validated by the plugin.")


class ModerationModelSpec(Strict):
    """A public moderation model name: backends combined by the max per category, and a policy."""

    backends: list[BackendSpec] = Field(min_length=1, description="Scores combine by max per category.")
    policy: str = Field("default", description="Name of the policy whose thresholds apply.")
    description: str = ""


class ModerationPolicy(Strict):
    """Per-category thresholds; categories left out use the thresholds shipped with the model."""

    thresholds: dict[str, float] = Field(default_factory=dict)

    @field_validator("thresholds")
    @classmethod
    def _known_categories(cls, value: dict[str, float]) -> dict[str, float]:
        for key, threshold in value.items():
            check_category(key)
            if not 0.0 <= threshold <= 1.0:
                raise ValueError(f"threshold for {key!r} must be within [0, 1], got {threshold}")
        return value


class ModerationLimits(Strict):
    """Request limits for `/v1/moderations`; beyond them the API answers 400 or 413."""

    max_items: int = Field(2048, ge=1, description="Inputs per request.")
    max_chars_per_item: int = Field(50_000, ge=1, description="Characters per input (long input is chunked).")
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="Request body size in bytes.")


def _builtin_models() -> dict[str, ModerationModelSpec]:
    return {
        DEFAULT_MODERATION_MODEL: ModerationModelSpec(
            backends=[
                BackendSpec(plugin="embedded"),
                BackendSpec(plugin="profanity"),
                BackendSpec(plugin="lists"),
            ],
            description="Distilled MiniLM encoder with trained per-category heads, alt-profanity-check's "
            "offensive-language model for harassment, and block/allow lists.",
        ),
        "bastion-lists": ModerationModelSpec(
            backends=[BackendSpec(plugin="lists")],
            description="Block and allow lists only (no model).",
        ),
    }


class ModerationSettings(Strict):
    """Moderation models, policies, aliases and limits."""

    default_model: str = DEFAULT_MODERATION_MODEL
    aliases: dict[str, str] = Field(default_factory=lambda: dict.fromkeys(OPENAI_MODEL_ALIASES, "default"))
    models: dict[str, ModerationModelSpec] = Field(default_factory=_builtin_models)
    policies: dict[str, ModerationPolicy] = Field(default_factory=lambda: {"default": ModerationPolicy()})
    limits: ModerationLimits = Field(default_factory=ModerationLimits)
    batch_size: int = Field(64, ge=1, description="Texts per forward pass of a model backend.")
    preload: bool = Field(True, description="Load the default model when the server starts.")

    @field_validator("models", mode="after")
    @classmethod
    def _keep_builtins(cls, value: dict[str, ModerationModelSpec]) -> dict[str, ModerationModelSpec]:
        return {**_builtin_models(), **value}

    @model_validator(mode="after")
    def _references_exist(self) -> ModerationSettings:
        self.policies.setdefault("default", ModerationPolicy())
        if self.default_model not in self.models:
            raise ValueError(
                f"default_model {self.default_model!r} is not among models: {sorted(self.models)}"
            )
        for name, spec in self.models.items():
            if spec.policy not in self.policies:
                raise ValueError(f"model {name!r} uses policy {spec.policy!r}, which is not defined")
        return self

    def resolve(self, name: str | None) -> str | None:
        """The configured model a request's `model` names (aliases followed), or None if unknown."""
        if name is None or name == "default":
            return self.default_model
        target = self.aliases.get(name, name)
        if target == "default":
            return self.default_model
        return target if target in self.models else None


def _config_file() -> Path | None:
    explicit = os.environ.get("BASTION_CONFIG")
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"BASTION_CONFIG points to {path}, which is not a file")
        return path
    for candidate in (
        Path("bastion.toml"),
        Path(os.environ.get("BASTION_HOME", "~/.bastion")) / "bastion.toml",
    ):
        candidate = candidate.expanduser()
        if candidate.is_file():
            return candidate
    return None


class Settings(BaseSettings):
    """Everything the service can be told. See the module docstring for precedence."""

    model_config = SettingsConfigDict(env_prefix="BASTION_", env_nested_delimiter="__", extra="forbid")

    env: Literal["development", "production"] = Field("development", description="Deployment mode.")
    home: Path = Field(Path("~/.bastion"), description="State directory: database, keys, caches.")
    data_dir: Path = Field(Path("../shared/data"), description="Where the public data sets are.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite in `home`.")
    auth: Literal["on", "off"] = Field("on", description="'off' only for local development on loopback.")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    log_level: str = "info"
    moderation: ModerationSettings = Field(default_factory=ModerationSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)

    @field_validator("home", "data_dir", mode="after")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _config_file()
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    @property
    def resolved_database_url(self) -> str:
        """The database URL in force: the setting, or SQLite in the state directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'bastion.db').resolve()}"

    def cache_dir(self, *parts: str) -> Path:
        """A folder under `home/cache`, created on demand."""
        path = self.home.joinpath("cache", *parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def check_serving(self, host: str) -> None:
        """Refuse settings that are unsafe for a server bound to `host`."""
        if self.auth == "off" and not is_loopback(host):
            raise ConfigError(
                f"auth is off, which is only allowed on a loopback address; refusing to bind {host}. "
                "Turn auth on (BASTION_AUTH=on) or bind 127.0.0.1."
            )


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_settings(**overrides: Any) -> Settings:
    """Build settings from every source; `overrides` (the command line) win. Errors become ConfigError."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise ConfigError(f"invalid setting {where}: {first['msg']}") from exc


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests build their own with `load_settings`)."""
    return load_settings()
