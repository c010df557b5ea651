"""Threshold sets: the gateway flags with the model's `strict` set, `/v1/moderations` with its defaults."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from bastion.core.settings import load_settings
from bastion.core.taxonomy import CATEGORY_KEYS
from bastion.moderation.backends.base import BackendScores, ModerationBackend, moderation_backends
from bastion.moderation.service import ModerationService
from tests.gateway.conftest import GatewayClient

BORDERLINE = "the neighbours painted their fence again"


@moderation_backends.register("test-borderline")
class BorderlineBackend(ModerationBackend):
    """Scores 0.6 harassment on the borderline sentence; default threshold 0.5, strict 0.8."""

    def score(self, texts: Sequence[str]) -> list[BackendScores]:
        return [
            BackendScores(
                scores={k: (0.6 if k == "harassment" and BORDERLINE in t else 0.0) for k in CATEGORY_KEYS}
            )
            for t in texts
        ]

    @property
    def threshold_sets(self) -> dict[str, dict[str, float]]:
        return {"strict": {**self.default_thresholds, "harassment": 0.8}}


MODERATION: dict[str, Any] = {
    "default_model": "borderline",
    "preload": False,
    "models": {"borderline": {"backends": [{"plugin": "test-borderline"}]}},
}


def test_the_service_flags_with_the_named_set() -> None:
    service = ModerationService(load_settings(moderation=MODERATION))
    try:
        _, default = service.moderate([BORDERLINE])
        _, strict = service.moderate([BORDERLINE], threshold_set="strict")
        _, unknown = service.moderate([BORDERLINE], threshold_set="no-such-set")
    finally:
        service.close()
    assert default[0].categories["harassment"] is True
    assert strict[0].categories["harassment"] is False
    assert strict[0].category_scores["harassment"] == default[0].category_scores["harassment"] == 0.6
    assert unknown[0].categories["harassment"] is True  # a set the backend lacks keeps its defaults


def test_the_gateway_uses_the_strict_set_unless_told_otherwise(
    make_client: Callable[..., GatewayClient],
) -> None:
    service = ModerationService(load_settings(moderation=MODERATION))
    gw = make_client(moderation=service)
    answer = gw.chat(BORDERLINE)
    assert answer.status_code == 200
    assert answer.json()["choices"][0]["finish_reason"] == "stop"
    flagged = gw.post("/v1/moderations", json={"input": BORDERLINE}).json()
    assert flagged["results"][0]["flagged"] is True

    by_defaults = make_client(
        moderation=service,
        gateway={"policies": {"default": {"input": {"threshold_set": "default"}}}},
    )
    blocked = by_defaults.chat(BORDERLINE).json()
    assert blocked["choices"][0]["finish_reason"] == "content_filter"
