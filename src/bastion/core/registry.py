"""One registry for every plug-in kind.

A kind is a `Registry` (`moderation_backends = Registry[ModerationBackend]("moderation_backend")`);
a plugin registers with the typed decorator `@moderation_backends.register("embedded")`. Plugins are
discovered through one entry-point group, `bastion.plugins`: each entry point names a module that is
imported, and its decorators register what it defines. Bastion's built-ins arrive the same way
(`bastion.plugins`, declared in pyproject.toml).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from bastion.core.errors import ConfigError, PluginNotFound

ENTRY_POINT_GROUP = "bastion.plugins"

T = TypeVar("T")

_loaded = False
_load_lock = threading.Lock()


def load_plugins() -> None:
    """Import every module named in the `bastion.plugins` entry-point group, once."""
    global _loaded
    with _load_lock:
        if _loaded:
            return
        _loaded = True
        names = set()
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            names.add(ep.value)
            try:
                ep.load()
            except ImportError as exc:
                raise ConfigError(
                    f"plugin entry point {ep.name!r} ({ep.value}) failed to import: {exc}"
                ) from exc
        if "bastion.plugins" not in names:
            # Running from a source tree that was never installed: the built-ins still load.
            importlib.import_module("bastion.plugins")


class Registry(Generic[T]):
    """Plugins of one kind, by name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, type[T]] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator that registers the class under `name`."""

        def decorator(cls: type[T]) -> type[T]:
            existing = self._items.get(name)
            if existing is not None and existing is not cls:
                raise ConfigError(f"{self.kind} {name!r} is registered twice ({existing!r} and {cls!r})")
            self._items[name] = cls
            cls.plugin_name = name  # type: ignore[attr-defined]
            return cls

        return decorator

    def get(self, name: str) -> type[T]:
        """The class registered under `name`; raises `PluginNotFound` listing what exists."""
        load_plugins()
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise PluginNotFound(f"no {self.kind} named {name!r}; registered: {known}") from None

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        load_plugins()
        return sorted(self._items)

    def items(self) -> list[tuple[str, type[T]]]:
        """(name, class) pairs, sorted by name."""
        load_plugins()
        return sorted(self._items.items())
