from importlib.metadata import entry_points

import pytest

from bastion.core.errors import ConfigError, PluginNotFound
from bastion.core.registry import ENTRY_POINT_GROUP, Registry
from bastion.moderation.backends.base import moderation_backends


class Thing:
    pass


def test_register_and_get() -> None:
    registry: Registry[Thing] = Registry("thing")

    @registry.register("a")
    class A(Thing):
        pass

    assert registry.get("a") is A
    assert "a" in registry.names()
    assert A.plugin_name == "a"  # type: ignore[attr-defined]


def test_unknown_name_lists_known() -> None:
    registry: Registry[Thing] = Registry("thing")
    registry.register("known")(type("K", (Thing,), {}))
    with pytest.raises(PluginNotFound, match="known"):
        registry.get("missing")


def test_duplicate_name_refused() -> None:
    registry: Registry[Thing] = Registry("thing")
    registry.register("x")(type("X1", (Thing,), {}))
    with pytest.raises(ConfigError, match="twice"):
        registry.register("x")(type("X2", (Thing,), {}))


def test_builtins_arrive_through_the_entry_point_group() -> None:
    assert "bastion.plugins" in {ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    assert {"embedded", "lists", "openai", "transformers"} <= set(moderation_backends.names())
