"""The moderation batcher: concurrent calls share a batch, results go back in order, errors propagate."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from bastion.core.records import ModerationResult
from bastion.gateway.batching import ModerationBatcher


class FakeService:
    """Scores `harassment` 1.0 for texts containing 'bad'; records each batch; slow, so calls pile up."""

    def __init__(self) -> None:
        self.batches: list[tuple[list[str], str | None]] = []

    def moderate(self, texts: list[str], model: str | None = None, explain: bool = False) -> Any:
        if model == "broken":
            raise RuntimeError("model failed")
        time.sleep(0.02)
        self.batches.append((list(texts), model))
        results = [
            ModerationResult.build({"harassment": 1.0 if "bad" in t else 0.0}, {"harassment": "bad" in t})
            for t in texts
        ]
        return model or "default", results


def test_concurrent_calls_are_batched_and_answered_in_order() -> None:
    service = FakeService()
    batcher = ModerationBatcher(service)  # type: ignore[arg-type]
    answers: dict[int, list[bool]] = {}

    def call(i: int) -> None:
        texts = [f"text {i} a", f"bad {i}" if i % 2 else f"fine {i}"]
        answers[i] = [r.flagged for r in batcher.moderate(texts, None, False)[1]]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    assert answers == {i: [False, bool(i % 2)] for i in range(12)}
    assert len(service.batches) < 12  # some calls shared a batch
    assert sum(len(texts) for texts, _ in service.batches) == 24


def test_models_are_not_mixed_and_errors_reach_the_caller() -> None:
    service = FakeService()
    batcher = ModerationBatcher(service)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="model failed"):
        batcher.moderate(["x"], "broken", False)
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda m=m: results.append(batcher.moderate([f"bad {m}"], m, False)))
        for m in ("a", "b", "a", "b")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    assert all(text.endswith(f" {model}") for texts, model in service.batches for text in texts)
    assert len(results) == 4
