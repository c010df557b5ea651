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
        self.word_spans: list[bool] = []

    def moderate(
        self,
        texts: list[str],
        model: str | None = None,
        explain: bool = False,
        threshold_set: str | None = None,
        word_spans: bool = True,
    ) -> Any:
        self.word_spans.append(word_spans)
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
    assert set(service.word_spans) == {False}  # the gateway redacts whole windows, never asks for words


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


class ThreadRecordingService(FakeService):
    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []

    def moderate(
        self,
        texts: list[str],
        model: str | None = None,
        explain: bool = False,
        threshold_set: str | None = None,
        word_spans: bool = True,
    ) -> Any:
        self.threads.append(threading.current_thread().name)
        return super().moderate(texts, model, explain, threshold_set, word_spans)


def test_an_idle_batcher_scores_on_the_callers_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bastion.gateway.batching.runs_inline", lambda service, model: True)
    service = ThreadRecordingService()
    batcher = ModerationBatcher(service)  # type: ignore[arg-type]
    name, results = batcher.moderate(["bad", "fine"], None, False)
    assert (name, [r.flagged for r in results]) == ("default", [True, False])
    assert service.threads == [threading.current_thread().name]
    assert batcher._thread is None  # no hand-off, no thread
    with pytest.raises(RuntimeError, match="model failed"):
        batcher.moderate(["x"], "broken", False)
    batcher.moderate(["again"], None, False)  # the failure released the scoring lock
    assert len(service.threads) == 3
    assert set(service.word_spans) == {False}


def test_calls_arriving_while_one_is_scored_inline_are_batched(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bastion.gateway.batching.runs_inline", lambda service, model: True)
    service = ThreadRecordingService()
    batcher = ModerationBatcher(service)  # type: ignore[arg-type]
    answers: dict[int, list[bool]] = {}

    def call(i: int) -> None:
        answers[i] = [r.flagged for r in batcher.moderate([f"bad {i}" if i % 2 else "ok"], None, False)[1]]

    threads = [threading.Thread(target=call, args=(i,), name=f"caller-{i}") for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    assert answers == {i: [bool(i % 2)] for i in range(10)}
    assert len(service.batches) < 10  # those that waited shared a batch
    assert "bastion-gateway-moderation" in service.threads


def test_a_model_that_runs_torch_is_always_scored_on_the_batch_thread() -> None:
    service = ThreadRecordingService()  # not a real service: assumed to need the batch thread
    batcher = ModerationBatcher(service)  # type: ignore[arg-type]
    batcher.moderate(["one"], None, False)
    batcher.moderate(["two"], None, False)
    batcher.close()
    assert service.threads == ["bastion-gateway-moderation"] * 2


def test_which_models_run_inline(make_settings: Any) -> None:
    from bastion.gateway.batching import runs_inline
    from bastion.moderation.service import ModerationService

    service = ModerationService(make_settings(moderation={"preload": False}))
    assert runs_inline(service, "bastion-lists")
    assert not runs_inline(service, "no-such-model")

    class Backend:
        def __init__(self, plugin_name: str, runtime: str | None = None) -> None:
            self.plugin_name, self.runtime = plugin_name, runtime

    class Loaded:
        def __init__(self, *backends: Backend) -> None:
            self.backends = list(backends)

    def fake(*backends: Backend) -> Any:
        return type("S", (), {"model": lambda self, name: Loaded(*backends)})()

    assert runs_inline(fake(Backend("embedded", "onnx"), Backend("profanity"), Backend("lists")), None)
    assert not runs_inline(fake(Backend("embedded", "torch"), Backend("lists")), None)
    assert not runs_inline(fake(Backend("transformers")), None)
    assert not runs_inline(fake(Backend("someone-elses")), None)
