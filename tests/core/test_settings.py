from pathlib import Path

import pytest

from bastion.core.errors import ConfigError
from bastion.core.settings import load_settings


def test_defaults() -> None:
    settings = load_settings()
    assert settings.host == "127.0.0.1"
    assert settings.moderation.default_model == "bastion-embedded"
    assert settings.resolved_database_url.startswith("sqlite:///")
    assert settings.resolved_database_url.endswith("bastion.db")


def test_precedence_toml_env_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "bastion.toml"
    config.write_text('port = 9001\nlog_level = "debug"\n[moderation]\ndefault_model = "bastion-lists"\n')
    monkeypatch.setenv("BASTION_CONFIG", str(config))
    from_file = load_settings()
    assert (from_file.port, from_file.log_level, from_file.moderation.default_model) == (
        9001,
        "debug",
        "bastion-lists",
    )
    monkeypatch.setenv("BASTION_PORT", "9002")
    from_env = load_settings()
    assert from_env.port == 9002
    assert from_env.log_level == "debug"
    assert load_settings(port=9003).port == 9003


def test_nested_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_MODERATION__LIMITS__MAX_ITEMS", "7")
    assert load_settings().moderation.limits.max_items == 7


def test_user_models_keep_builtins() -> None:
    settings = load_settings(moderation={"models": {"mine": {"backends": [{"plugin": "lists"}]}}})
    assert {"mine", "bastion-embedded", "bastion-lists"} <= set(settings.moderation.models)
    assert settings.moderation.resolve("omni-moderation-latest") == "bastion-embedded"
    assert settings.moderation.resolve("mine") == "mine"
    assert settings.moderation.resolve("nope") is None


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"port": 70000}, "port"),
        ({"unknown_setting": 1}, "unknown_setting"),
        ({"moderation": {"default_model": "missing"}}, "default_model"),
        ({"moderation": {"policies": {"default": {"thresholds": {"nonsense": 0.5}}}}}, "nonsense"),
        ({"moderation": {"policies": {"default": {"thresholds": {"hate": 1.5}}}}}, "hate"),
    ],
)
def test_invalid_settings_are_config_errors(overrides: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_settings(**overrides)


def test_missing_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BASTION_CONFIG", str(tmp_path / "absent.toml"))
    with pytest.raises(ConfigError, match="not a file"):
        load_settings()


@pytest.mark.parametrize(
    "host, ok",
    [("127.0.0.1", True), ("localhost", True), ("::1", True), ("0.0.0.0", False), ("192.168.1.5", False)],
)
def test_auth_off_only_on_loopback(host: str, ok: bool) -> None:
    settings = load_settings(auth="off")
    if ok:
        settings.check_serving(host)
    else:
        with pytest.raises(ConfigError, match="auth is off"):
            settings.check_serving(host)
    load_settings(auth="on").check_serving(host)
