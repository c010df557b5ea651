"""Model routing: public chat model names → a loaded backend, created on first use."""

from __future__ import annotations

import threading
from typing import Any

from bastion.core.errors import BastionError, ConfigError, ModelNotFound
from bastion.core.settings import Settings
from bastion.llm.base import ChatBackend, create_chat_backend
from bastion.llm.settings import LLMSettings


class ChatModels:
    """The configured chat models; each backend is created once, on first use, and shared."""

    def __init__(self, llm: LLMSettings, settings: Settings) -> None:
        self.llm = llm
        self.settings = settings
        self._backends: dict[str, ChatBackend] = {}
        self._lock = threading.Lock()

    def resolve(self, name: str | None) -> str:
        """The configured model a request names ('default' or None → the default); ModelNotFound else."""
        if name is None or name == "default":
            return self.llm.default_model
        if name not in self.llm.models:
            known = ", ".join(sorted(self.llm.models))
            raise ModelNotFound(
                f"The model '{name}' does not exist. Configured chat models: {known}", param="model"
            )
        return name

    def backend(self, name: str) -> ChatBackend:
        """The loaded backend serving model `name`."""
        resolved = self.resolve(name)
        with self._lock:
            backend = self._backends.get(resolved)
            if backend is None:
                spec = self.llm.models[resolved]
                try:
                    backend = create_chat_backend(spec.backend, spec.options, self.settings)
                except BastionError:
                    raise
                except Exception as exc:
                    raise ConfigError(f"chat model {resolved!r} failed to load: {exc}") from exc
                self._backends[resolved] = backend
            return backend

    def listing(self) -> list[dict[str, Any]]:
        """`GET /v1/models` entries, in OpenAI's shape plus the backend name."""
        return [
            {
                "id": name,
                "object": "model",
                "created": 0,
                "owned_by": "bastion",
                "backend": spec.backend,
                "description": spec.description,
                "default": name == self.llm.default_model,
            }
            for name, spec in sorted(self.llm.models.items())
        ]

    def close(self) -> None:
        """Close every loaded backend."""
        with self._lock:
            for backend in self._backends.values():
                backend.close()
            self._backends.clear()
