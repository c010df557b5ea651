"""The embedded backend's fast path: fused ONNX graph (built once, reused, rebuilt when damaged), the torch
fallback, the score cache, hidden-layer heads, and serving without torch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bastion.core.errors import DependencyMissing
from bastion.core.settings import BackendSpec, Settings, load_settings
from bastion.core.taxonomy import CATEGORY_KEYS
from bastion.moderation import onnx_export
from bastion.moderation.backends.base import create_backend
from bastion.moderation.backends.embedded import EmbeddedBackend
from bastion.moderation.encoder import ChunkedEmbeddings, pad_batch
from bastion.moderation.train import default_artifacts_dir

THREAT = "I am going to kill you and your whole family tonight"
FILLER = " ".join(
    ["The committee reviewed the quarterly budget and agreed to repaint the library next spring."] * 60
)
TEXTS = [
    "What's the weather like in Paris tomorrow?",
    THREAT,
    "You are a worthless idiot and everyone hates you.",
    "Can you recommend a good pasta recipe?",
    "I want to end my life tonight.",
    "",
    FILLER + " " + THREAT + ".",
]


@pytest.fixture(scope="module")
def settings() -> Settings:
    """The test session's home (a temporary folder, see conftest): graphs built here are shared with the
    other moderation tests of the session."""
    return load_settings()


def make(settings: Settings, **options: Any) -> EmbeddedBackend:
    backend = create_backend(BackendSpec(plugin="embedded", options=options), settings)
    assert isinstance(backend, EmbeddedBackend)
    return backend


@pytest.fixture(scope="module")
def onnx_backend(settings: Settings) -> EmbeddedBackend:
    return make(settings, runtime="onnx")


@pytest.fixture(scope="module")
def torch_backend(settings: Settings) -> EmbeddedBackend:
    return make(settings, runtime="torch", cache_size=0)


def matrix(results: list[Any]) -> np.ndarray:
    return np.array([[r.scores[k] for k in CATEGORY_KEYS] for r in results])


def flagged(backend: EmbeddedBackend, scores: dict[str, float]) -> set[str]:
    return {k for k, v in scores.items() if v >= backend.default_thresholds[k]}


def test_onnx_graph_is_int8_and_validated(onnx_backend: EmbeddedBackend) -> None:
    assert onnx_backend.runtime == "onnx" and onnx_backend.graph is not None
    info = onnx_backend.describe()["onnx"]
    assert info["quantized"] is True
    assert info["validation"]["passed"] and info["validation"]["mean_cosine"] >= 0.98


def test_onnx_and_torch_agree_and_long_text_is_flagged_at_its_end(
    onnx_backend: EmbeddedBackend, torch_backend: EmbeddedBackend
) -> None:
    fast, slow = onnx_backend.score(TEXTS), torch_backend.score(TEXTS)
    diff = np.abs(matrix(fast) - matrix(slow))
    assert diff.mean() < 0.03 and diff.max() < 0.35
    for backend, results in ((onnx_backend, fast), (torch_backend, slow)):
        threat, long = results[1], results[-1]
        assert flagged(backend, threat.scores) & {"harassment/threatening", "violence"}
        hits = flagged(backend, long.scores) & {"harassment/threatening", "violence"}
        assert hits
        start, end = long.spans[next(iter(hits))][0]
        assert start > len(FILLER) // 2 and end == len(TEXTS[-1])
        assert not flagged(backend, results[0].scores)


def test_fused_scores_equal_heads_on_fused_embeddings(onnx_backend: EmbeddedBackend) -> None:
    chunks = onnx_backend.encoder.encode_chunks(TEXTS)
    assert chunks.scores is not None and len(chunks.offsets) > len(TEXTS)
    assert np.allclose(chunks.scores, onnx_backend.heads.params.predict(chunks.embeddings), atol=1e-4)


def test_cache_returns_identical_results_and_is_bounded(settings: Settings) -> None:
    backend = make(settings, cache_size=3)
    first = backend.score(TEXTS[:2])
    again = backend.score(TEXTS[:2])
    assert [r.scores for r in first] == [r.scores for r in again]
    assert [r.spans for r in first] == [r.spans for r in again]
    assert backend._cache.hits == 2
    again[0].scores["violence"] = 2.0  # callers cannot corrupt the cache
    assert backend.score(TEXTS[:1])[0].scores == first[0].scores
    duplicates = backend.score([TEXTS[3], TEXTS[3], TEXTS[4], TEXTS[5], TEXTS[3]])
    assert duplicates[0].scores == duplicates[1].scores == duplicates[4].scores
    assert len(backend._cache) == 3
    assert len(make(settings, cache_size=0)._cache) == 0


def test_graph_is_reused_without_rebuild(
    settings: Settings, onnx_backend: EmbeddedBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert onnx_backend.graph is not None
    path = onnx_backend.graph.path
    mtime = path.stat().st_mtime_ns

    def no_build(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the graph was rebuilt")

    monkeypatch.setattr(onnx_export, "build_graph", no_build)
    again = make(settings)
    assert again.graph is not None and again.graph.path == path and path.stat().st_mtime_ns == mtime
    assert matrix(again.score(TEXTS[:3])).tolist() == matrix(onnx_backend.score(TEXTS[:3])).tolist()


def test_changed_graph_file_fails_the_hash_check(settings: Settings, onnx_backend: EmbeddedBackend) -> None:
    graph = onnx_backend.graph
    assert graph is not None
    root = settings.cache_dir("onnx")
    assert onnx_export.cached_graph(root, graph.key) is not None
    backup = graph.path.read_bytes()
    try:
        graph.path.write_bytes(backup[:-10])  # truncated
        assert onnx_export.cached_graph(root, graph.key) is None
    finally:
        graph.path.write_bytes(backup)
    assert onnx_export.cached_graph(root, graph.key) is not None


def test_corrupt_graph_that_passes_the_hash_is_rebuilt_on_load(settings: Settings) -> None:
    first = make(settings)
    assert first.graph is not None
    path = first.graph.path
    path.write_bytes(b"garbage")
    meta_file = path.parent / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta["sha256"] = onnx_export._sha256(path)  # the hash matches: only loading can tell
    meta_file.write_text(json.dumps(meta))
    rebuilt = make(settings)
    assert rebuilt.graph is not None and rebuilt.graph.path.stat().st_size > 1_000_000
    assert flagged(rebuilt, rebuilt.score([THREAT])[0].scores)
    assert json.loads(meta_file.read_text())["sha256"] == onnx_export._sha256(path)


def test_torch_fallback_when_onnxruntime_is_missing(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    backend = make(settings)
    assert backend.runtime == "torch" and backend.graph is None
    assert flagged(backend, backend.score([THREAT])[0].scores)
    with pytest.raises(DependencyMissing, match="pip install onnxruntime"):
        make(settings, runtime="onnx")


def test_hidden_layer_heads_and_bundled_encoder(settings: Settings, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    folder = tmp_path / "heads"
    folder.mkdir()
    shutil.copy(default_artifacts_dir() / "card.json", folder / "card.json")
    hidden = 16
    np.savez(
        folder / "heads.npz",
        hidden_weight=rng.normal(0, 1, (hidden, 384)).astype(np.float32),
        hidden_bias=rng.normal(0, 0.1, hidden).astype(np.float32),
        weight=rng.normal(0, 1, (13, hidden)).astype(np.float32),
        bias=np.zeros(13, np.float32),
        categories=np.array(CATEGORY_KEYS),
    )
    from bastion.moderation.encoder import default_model_path

    (folder / "encoder").symlink_to(default_model_path(), target_is_directory=True)
    fast = make(settings, heads_path=str(folder))
    slow = make(settings, heads_path=str(folder), runtime="torch")
    assert fast.encoder.model_path == folder / "encoder" and fast.graph is not None
    assert fast.graph.meta["hidden_layer"] is True
    chunks = fast.encoder.encode_chunks(TEXTS[:4])
    assert chunks.scores is not None
    assert np.allclose(chunks.scores, fast.heads.params.predict(chunks.embeddings), atol=1e-4)
    assert np.abs(matrix(fast.score(TEXTS[:4])) - matrix(slow.score(TEXTS[:4]))).mean() < 0.05


def test_pool_max_matches_a_plain_loop() -> None:
    rng = np.random.default_rng(1)
    index = np.array([0, 1, 1, 1, 2, 3, 3])
    values = rng.random((len(index), 13))
    values[2, 4] = values[3, 4] = 5.0  # a tie: the first window wins
    chunks = ChunkedEmbeddings(np.zeros((len(index), 4), np.float32), index, [(0, 0)] * len(index))
    best, which = chunks.pool_max(values, 4)
    for t in range(4):
        rows = np.flatnonzero(index == t)
        assert np.array_equal(best[t], values[rows].max(0))
        assert np.array_equal(which[t], rows[values[rows].argmax(0)])
    one = ChunkedEmbeddings(np.zeros((3, 4), np.float32), np.zeros(3, np.int64), [(0, 0)] * 3)
    best, which = one.pool_max(values[:3], 1)
    assert np.array_equal(best[0], values[:3].max(0)) and np.array_equal(which[0], values[:3].argmax(0))


def test_serving_from_the_cache_never_imports_torch(
    settings: Settings, onnx_backend: EmbeddedBackend
) -> None:
    code = (
        "import sys\n"
        "from bastion.core.settings import BackendSpec, load_settings\n"
        "from bastion.moderation.backends.base import create_backend\n"
        "b = create_backend(BackendSpec(plugin='embedded'), load_settings())\n"
        f"assert b.score([{THREAT!r}])[0].spans, 'threat not flagged'\n"
        "print(b.runtime, 'torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    env = {**os.environ, "BASTION_HOME": str(settings.home), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["onnx", "False", "False"]


def test_a_large_batch_split_over_workers_scores_each_text_as_alone(settings: Settings) -> None:
    backend = make(settings, runtime="onnx", cache_size=0, workers=2)
    encoder = backend.encoder
    assert isinstance(encoder, onnx_export.OnnxEncoder)
    # Whatever this machine's probe decided, one-text calls here run on a 2-thread session.
    encoder.single_session = onnx_export.open_session(encoder.graph.path, 2)
    texts = [f"{text} (message {i})" for i in range(4) for text in TEXTS]
    assert len(texts) >= onnx_export.SHARD_MIN_TEXTS * 2
    together = matrix(backend.score(texts))
    alone = matrix([backend.score([text])[0] for text in texts])
    # int8 graphs run one window per call, so a text's scores never depend on the texts beside it, nor on
    # the session's thread count.
    assert np.array_equal(together, alone)
    chunks = backend.encoder.encode_chunks(texts)
    assert chunks.text_index.tolist() == sorted(chunks.text_index.tolist())
    assert set(chunks.text_index.tolist()) == set(range(len(texts)))


@pytest.mark.parametrize(
    ("sizes", "shards", "expected"),
    [
        ([1] * 10, 2, [(0, 5), (5, 10)]),
        ([5, 1, 1, 1, 1, 1], 2, [(0, 1), (1, 6)]),
        ([3], 2, [(0, 1)]),
        ([1, 1, 100, 1], 3, [(0, 3), (3, 4)]),
    ],
)
def test_shard_bounds_cover_every_item_in_runs_of_similar_size(
    sizes: list[int], shards: int, expected: list[tuple[int, int]]
) -> None:
    assert onnx_export.shard_bounds(sizes, shards) == expected


def test_token_types_folded_into_the_positions_give_the_same_embeddings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnx

    from bastion.moderation.encoder import WindowTokenizer, batch_inputs, resolve_model_path

    encoder = resolve_model_path(default_artifacts_dir() / "encoder")
    config = onnx_export.export_encoder(encoder, tmp_path / "export.onnx")
    folded = onnx_export.optimize_encoder(tmp_path / "export.onnx", tmp_path / "folded.onnx", config)
    monkeypatch.setattr(onnx_export, "fold_token_types", lambda model: None)
    plain = onnx_export.optimize_encoder(tmp_path / "export.onnx", tmp_path / "plain.onnx", config)
    graphs = {name: onnx.load(str(path)) for name, path in (("folded", folded), ("plain", plain))}
    (embed,) = [n for n in graphs["folded"].graph.node if n.op_type == "EmbedLayerNormalization"]
    assert embed.input[1] == "" and embed.input[4] == ""  # no token types left
    assert len(graphs["folded"].graph.node) <= len(graphs["plain"].graph.node) - 10
    tokenizer = WindowTokenizer(encoder, 128, 32)
    windows = tokenizer.windows(TEXTS[:5], sentences=True)
    feed = onnx_export.feed_dict(*batch_inputs(windows.ids, windows.segments, tokenizer.pad_id))
    outputs = {
        name: onnx_export.open_session(path, 1).run(["embedding"], feed)[0]
        for name, path in (("folded", folded), ("plain", plain))
    }
    assert np.abs(outputs["folded"] - outputs["plain"]).max() < 1e-5
    assert np.abs(outputs["plain"]).max() > 0.01


def test_one_window_is_padded_as_in_a_batch() -> None:
    alone_ids, alone_mask = pad_batch([[101, 7, 8, 102]], pad_id=0)
    batch_ids, batch_mask = pad_batch([[101, 7, 8, 102], [101, 102]], pad_id=0)
    assert alone_ids.dtype == batch_ids.dtype == np.int64 and alone_mask.dtype == np.int64
    assert alone_ids.tolist() == batch_ids[:1].tolist() == [[101, 7, 8, 102]]
    assert alone_mask.tolist() == batch_mask[:1].tolist() == [[1, 1, 1, 1]]
    assert batch_mask[1].tolist() == [1, 1, 0, 0]


def test_the_backends_score_concurrently_with_the_same_results(settings: Settings) -> None:
    from bastion.moderation import service

    model = service.ModerationService(settings).model("bastion-embedded")
    assert len(model.backends) > 1
    texts = [f"{text} (message {i})" for i in range(3) for text in TEXTS]
    together = model.moderate(texts, explain=True)
    assert model._helper is not None  # the other backends ran on the helper thread
    assert [r.model_dump() for r in together] == [
        model.moderate([t], explain=True)[0].model_dump() for t in texts
    ]
    model.close()
    assert model._helper is None


class CountingSession:
    """Wraps an ONNX Runtime session and counts its runs."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.runs = 0

    def run(self, *args: Any) -> Any:
        self.runs += 1
        return self.session.run(*args)


def test_the_single_text_session_is_kept_only_when_it_measures_faster(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(onnx_export, "SINGLE_SPEEDUP", 0.0)  # nothing is that fast: never kept
    slow = make(settings, runtime="onnx", cache_size=0, single_text_threads=2)
    info = slow.describe()["onnx"]["single_text_session"]
    assert info["used"] is False and info["threads"] == 2
    assert info["serving_ms"] > 0 and info["single_ms"] > 0
    monkeypatch.setattr(onnx_export, "SINGLE_SPEEDUP", 100.0)  # anything passes: always kept
    fast = make(settings, runtime="onnx", cache_size=0, single_text_threads=2)
    assert fast.describe()["onnx"]["single_text_session"]["used"] is True
    off = make(settings, runtime="onnx", cache_size=0, single_text_threads=1)
    assert off.describe()["onnx"]["single_text_session"] == {"used": False}


def test_only_the_single_text_session_spins_unless_turned_off(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(onnx_export, "SINGLE_SPEEDUP", 100.0)  # always kept
    key = "session.intra_op.allow_spinning"

    def spinning(session: Any) -> str:
        return str(session.get_session_options().get_session_config_entry(key))

    for option, expected in ((True, "1"), (False, "0")):
        backend = make(
            settings, runtime="onnx", cache_size=0, single_text_threads=2, single_text_spinning=option
        )
        encoder = backend.encoder
        assert isinstance(encoder, onnx_export.OnnxEncoder)
        assert spinning(encoder.single_session) == expected
        assert spinning(encoder.session) == "0"  # batches never spin: they would burn the other core


def test_the_spinning_session_stops_spinning_when_a_call_returns(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(onnx_export, "SINGLE_SPEEDUP", 100.0)  # always kept
    backend = make(settings, runtime="onnx", cache_size=0, single_text_threads=2, single_text_spinning=True)
    encoder = backend.encoder
    assert isinstance(encoder, onnx_export.OnnxEncoder) and encoder.single_session is not None
    for i in range(5):
        encoder.encode_chunks([f"A short text to score, number {i}."])
    before = time.process_time()
    time.sleep(0.2)
    burnt = time.process_time() - before
    # Left spinning, the pool thread burns most of a core for ~50 ms after each call.
    assert burnt < 0.02, f"{burnt * 1000:.1f} ms of CPU while idle"


def test_one_text_uses_the_single_session_unless_another_call_holds_it(settings: Settings) -> None:
    backend = make(settings, runtime="onnx", cache_size=0, single_text_threads=1)
    encoder = backend.encoder
    assert isinstance(encoder, onnx_export.OnnxEncoder) and encoder.single_session is None
    single = CountingSession(onnx_export.open_session(encoder.graph.path, 2))
    serving = CountingSession(encoder.session)
    encoder.single_session, encoder.session = single, serving
    (first,) = backend.score([TEXTS[0]])
    assert (single.runs, serving.runs) == (1, 0)
    with encoder._single_lock:  # as if another request were running on it
        (second,) = backend.score([TEXTS[0]])
    assert (single.runs, serving.runs) == (1, 1)
    assert first.scores == second.scores
    backend.score(TEXTS[:4])  # several texts: the serving session (and its workers)
    assert single.runs == 1 and serving.runs >= 5
