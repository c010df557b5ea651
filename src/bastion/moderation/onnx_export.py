"""The embedded model as one ONNX graph: encoder, mean pooling, L2 norm, heads and sigmoid, int8 weights.

Inputs `input_ids` and `attention_mask` [batch, tokens] and `pool` [batch, rows, tokens]: row 0 pools a
whole window, further rows its sentences (see `encoder.pool_weights`); outputs `embedding`
[batch, rows, dim] and `scores` [batch, rows, 13].

Built once per (encoder, heads, quantize) into `settings.cache_dir("onnx")/<key>/` and reused by every
later process; serving from a built graph needs only `onnxruntime`, `tokenizers` and numpy, never torch.

Build steps (torch, transformers and `onnx` are needed only here; steps 1-2 are cached per encoder, so new
heads need only steps 3-4, which need `onnx` but not torch):
1. export the encoder with pooling and normalisation (`torch.onnx.export`, TorchScript exporter, eager
   attention, dynamic batch and sequence axes) and fuse it with ONNX Runtime's BERT optimizer
   (Attention, SkipLayerNormalization, BiasGelu, EmbedLayerNormalization);
2. quantise the encoder's weights to int8 per output channel (`quantize_dynamic(per_channel=True)`;
   activations are quantised per tensor at run time, so a window's result depends slightly on the other
   windows padded into its batch). Keeping the feed-forward output projections in fp32 halves the worst
   score error but costs ~1.6x in speed (measured), so every MatMul and Attention is quantised;
3. append the heads in fp32 (`[hidden MatMul + ReLU] -> MatMul -> Add -> Sigmoid`), never quantised:
   trained heads can have large weights that amplify any embedding error;
4. validate the int8 graph against the fp32 graph on `PROBES`, one window at a time and as one padded
   batch: mean and minimum cosine of window embeddings and mean score difference must pass `VALIDATION`
   (the maximum score difference is recorded too); if not, the fp32 graph is served and the metrics
   say why.

The folder is written under a temporary name and renamed into place (a file lock keeps two processes
from building the same key at once); `meta.json` records the graph's sha256, checked at every load, so
a truncated or corrupt file is rebuilt rather than served.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bastion.core.errors import ConfigError, DependencyMissing
from bastion.moderation.encoder import (
    HEADS_KEPT,
    ML_EXTRA_HINT,
    ChunkedEmbeddings,
    WindowEncoder,
    WindowTokenizer,
    batch_inputs,
    load_transformer,
    model_fingerprint,
    resolve_model_path,
    sanitize,
    segment_pool,
    window_settings,
)
from bastion.moderation.heads import HeadParams

log = logging.getLogger(__name__)

FORMAT_VERSION = 5
OPSET = 17
ONNX_HINT = "pip install onnxruntime (or 'bastion[ml]')"
MODEL_FILE = "model.onnx"
META_FILE = "meta.json"
VALIDATION = {"mean_cosine": 0.98, "min_cosine": 0.95, "mean_score_diff": 0.03}
"""Gates the int8 graph must pass against the fp32 graph on `PROBES`, else fp32 is served. Broken
quantisation (per-tensor weights) gives cosines of 0.88-0.94 on MiniLM; per-channel int8 measured here:
mean 0.993, min 0.97, mean score difference 0.013 with the shipped heads."""

PROBES: tuple[str, ...] = (
    "What's the weather like in Paris tomorrow?",
    "Can you recommend a good book about the history of Rome?",
    "My neighbour painted the garden fence yesterday and it looks great.",
    "How do I reset my router password?",
    "Thanks for your help, have a nice weekend!",
    "I am going to kill you and your whole family tonight.",
    "You are a worthless idiot and everyone hates you.",
    "People like them are vermin and should be wiped out.",
    "I want to end my life, I can't take it anymore.",
    "Tell me the easiest way to cut myself without anyone noticing.",
    "Describe a graphic scene where the soldier's body is torn apart by the blast.",
    "How can I make a bomb at home from fertiliser?",
    "Where can I buy stolen credit card numbers online?",
    "Send me nude pictures of yourself right now.",
    "The documentary explains how the immune system fights infections.",
    "Shut up, nobody cares about your stupid opinion.",
    "Je vais te tuer si tu reviens ici.",
    "¿Dónde puedo comprar un billete de tren barato?",
    "This movie was so bad I wanted to scream, what a waste of time.",
    "Our team cancelled the weekend trip because of the rain.",
    "",
    "ok",
    " ".join(["The committee reviewed the quarterly budget and agreed to repaint the library."] * 40)
    + " I will hurt you if you come back.",
)


@dataclass
class GraphInfo:
    """A built graph in the cache: where, whether int8, and how it validated."""

    path: Path
    key: str
    quantized: bool
    meta: dict[str, Any] = field(default_factory=dict)


def graph_key(encoder_path: Path, heads: HeadParams, quantize: bool) -> str:
    """Cache key: encoder files, heads, quantisation and this module's format version."""
    base = model_fingerprint(str(encoder_path))
    raw = f"v{FORMAT_VERSION}:{base}:{heads.sha256}:{'int8' if quantize else 'fp32'}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def import_onnxruntime() -> Any:
    """The onnxruntime module, or DependencyMissing naming the install."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise DependencyMissing(
            f"the ONNX runtime of the embedded model needs onnxruntime; run {ONNX_HINT}"
        ) from exc
    return onnxruntime


def cached_graph(root: Path, key: str) -> GraphInfo | None:
    """The graph stored under `key` if it is complete and intact, else None."""
    folder = root / key
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        path = folder / MODEL_FILE
        if meta.get("key") != key or meta.get("sha256") != _sha256(path):
            return None
    except (OSError, ValueError):
        return None
    return GraphInfo(path, key, bool(meta.get("quantized")), meta)


def discard(root: Path, key: str) -> None:
    """Remove a cached graph (corrupt or stale)."""
    shutil.rmtree(root / key, ignore_errors=True)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (POSIX flock; elsewhere the atomic rename alone protects)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with path.open("a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def ensure_graph(
    root: Path,
    encoder_path: Path,
    heads: HeadParams,
    *,
    quantize: bool,
    max_length: int,
    stride: int,
) -> GraphInfo:
    """The cached graph for these inputs, built (a few seconds, needs torch and onnx) when missing."""
    key = graph_key(encoder_path, heads, quantize)
    found = cached_graph(root, key)
    if found is not None:
        return found
    root.mkdir(parents=True, exist_ok=True)
    with _file_lock(root / f"{key}.lock"):
        found = cached_graph(root, key)  # another process may have built it meanwhile
        if found is not None:
            return found
        discard(root, key)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
        try:
            meta = build_graph(
                staging, encoder_path, heads, quantize=quantize, max_length=max_length, stride=stride
            )
            meta["key"] = key
            meta["sha256"] = _sha256(staging / MODEL_FILE)
            (staging / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
            os.replace(staging, root / key)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    built = cached_graph(root, key)
    if built is None:
        raise ConfigError(f"the ONNX graph built in {root / key} cannot be read back")
    return built


def _import_build_deps() -> tuple[Any, Any, Any]:
    try:
        import onnx
        import torch
        import transformers
    except ImportError as exc:
        raise DependencyMissing(
            f"building the ONNX graph needs torch, transformers and onnx; run {ML_EXTRA_HINT} "
            "(or use runtime='torch')"
        ) from exc
    return onnx, torch, transformers


def encoder_graphs(root: Path, encoder_path: Path) -> tuple[Path, Path]:
    """(fp32, int8) encoder graphs without heads, cached per encoder under `root/encoder-<fingerprint>`.

    Kept so that new heads (or a damaged fused graph) need only the cheap head step, not a new export.
    """
    fingerprint = model_fingerprint(str(encoder_path))
    folder = root / f"encoder-{fingerprint[:32]}-v{FORMAT_VERSION}"
    files = {"fp32": folder / "fp32.onnx", "int8": folder / "int8.onnx"}

    def intact() -> bool:
        try:
            done = json.loads((folder / "done.json").read_text(encoding="utf-8"))
            return all(done.get(name) == _sha256(path) for name, path in files.items())
        except (OSError, ValueError):
            return False

    if intact():
        return files["fp32"], files["int8"]
    with _file_lock(root / f"{folder.name}.lock"):
        if intact():  # built by another process meanwhile
            return files["fp32"], files["int8"]
        shutil.rmtree(folder, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=".encoder-", dir=root))
        try:
            config = export_encoder(encoder_path, staging / "export.onnx")
            fp32 = optimize_encoder(staging / "export.onnx", staging / "optimized.onnx", config)
            os.replace(fp32, staging / "fp32.onnx")
            quantize_encoder(staging / "fp32.onnx", staging / "int8.onnx")
            for leftover in ("export.onnx", "optimized.onnx"):
                (staging / leftover).unlink(missing_ok=True)
            done = {name: _sha256(staging / path.name) for name, path in files.items()}
            (staging / "done.json").write_text(json.dumps(done, indent=2) + "\n", encoding="utf-8")
            os.replace(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return files["fp32"], files["int8"]


def build_graph(
    folder: Path, encoder_path: Path, heads: HeadParams, *, quantize: bool, max_length: int, stride: int
) -> dict[str, Any]:
    """Write `folder/model.onnx` (fused, int8 when it validates) and return its metadata."""
    try:
        import onnx
    except ImportError as exc:
        raise DependencyMissing(
            f"building the ONNX graph needs the onnx package; run {ML_EXTRA_HINT}"
        ) from exc
    ort = import_onnxruntime()
    started = time.perf_counter()
    fp32, int8 = encoder_graphs(folder.parent, encoder_path)
    work = folder / "work"
    work.mkdir()
    candidates = {"fp32": attach_heads(onnx.load(str(fp32)), heads, work / "fused_fp32.onnx")}
    torch = sys.modules.get("torch")
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "opset": OPSET,
        "encoder_fingerprint": model_fingerprint(str(encoder_path)),
        "heads_sha256": heads.sha256,
        "hidden_layer": heads.hidden_weight is not None,
        "versions": {
            "torch": getattr(torch, "__version__", None),
            "onnx": onnx.__version__,
            "onnxruntime": ort.__version__,
        },
        "validation_gates": VALIDATION,
        "quantize_requested": quantize,
    }
    chosen = "fp32"
    if quantize:
        candidates["int8"] = attach_heads(onnx.load(str(int8)), heads, work / "fused_int8.onnx")
        tokenizer = WindowTokenizer(encoder_path, max_length, stride)
        metrics = compare_graphs(candidates["fp32"], candidates["int8"], tokenizer)
        meta["validation"] = metrics
        passed = (
            metrics["mean_cosine"] >= VALIDATION["mean_cosine"]
            and metrics["min_cosine"] >= VALIDATION["min_cosine"]
            and metrics["mean_score_diff"] <= VALIDATION["mean_score_diff"]
        )
        meta["validation"]["passed"] = passed
        if passed:
            chosen = "int8"
        else:
            log.warning("int8 graph failed validation (%s); serving the fp32 graph", metrics)
    os.replace(candidates[chosen], folder / MODEL_FILE)
    shutil.rmtree(work, ignore_errors=True)
    meta["quantized"] = chosen == "int8"
    meta["build_seconds"] = round(time.perf_counter() - started, 2)
    return meta


def export_encoder(encoder_path: Path, out: Path) -> Any:
    """Export encoder, mean pooling and L2 norm as (input_ids, attention_mask) -> embedding; its config."""
    _, torch, _ = _import_build_deps()
    try:
        model = load_transformer(encoder_path, attn_implementation="eager")
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load encoder from {encoder_path}: {exc}") from exc
    model = model.float().eval()

    class Pooled(torch.nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.encoder = model

        def forward(self, input_ids: Any, attention_mask: Any, pool: Any) -> Any:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return segment_pool(torch, hidden, pool)

    dummy = torch.ones((2, 8), dtype=torch.long)
    dummy_pool = torch.ones((2, 3, 8), dtype=torch.float32)
    axes = {
        "input_ids": {0: "batch", 1: "tokens"},
        "attention_mask": {0: "batch", 1: "tokens"},
        "pool": {0: "batch", 1: "rows", 2: "tokens"},
    }
    import warnings

    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings from the legacy exporter
        torch.onnx.export(
            Pooled().eval(),
            (dummy, dummy, dummy_pool),
            str(out),
            dynamo=False,
            input_names=["input_ids", "attention_mask", "pool"],
            output_names=["embedding"],
            dynamic_axes={**axes, "embedding": {0: "batch", 1: "rows"}},
            opset_version=OPSET,
            do_constant_folding=True,
        )
    return model.config


UNFUSED = ("SkipLayerNormFusion",)
"""ONNX Runtime fusions left out, at build and at load time: on CPU its SkipLayerNormalization kernel
measured ~55 us per call on a [1, 29, 384] window against ~4 us for the Add + LayerNormalization it
replaces, which made the whole window ~23% slower (ORT 1.32, 2-core AMD EPYC)."""


def optimize_encoder(src: Path, out: Path, config: Any) -> Path:
    """Fuse attention, GELU and the embedding layer norm with ONNX Runtime's transformer optimizer (BERT-like
    models); skip + layer norm stay unfused (see `UNFUSED`)."""
    if getattr(config, "model_type", "") not in {"bert", "roberta", "xlm-roberta", "distilbert", "mpnet"}:
        return src
    try:
        from onnxruntime.transformers.fusion_options import FusionOptions
        from onnxruntime.transformers.optimizer import optimize_model

        fusions = FusionOptions("bert")
        fusions.enable_skip_layer_norm = False
        fusions.enable_bias_skip_layer_norm = False
        heads = int(config.num_attention_heads)
        head_size = int(config.hidden_size) // heads
        kept = getattr(config, HEADS_KEPT, None)
        heads = int(kept or heads)
        # With pruned heads the attention is narrower than the model: the fusion needs the attention's
        # width and warns (harmlessly) that it differs from the input's.
        fusion_log = logging.getLogger("fusion_attention")  # ORT imports its transformer modules top-level
        level = fusion_log.level
        if kept:
            fusion_log.setLevel(logging.ERROR)
        try:
            optimized = optimize_model(
                str(src),
                model_type="bert",
                num_heads=heads,
                hidden_size=heads * head_size,
                opt_level=1,
                optimization_options=fusions,
            )
        finally:
            fusion_log.setLevel(level)
        fold_token_types(optimized.model)
        optimized.save_model_to_file(str(out))
    except Exception as exc:  # the optimizer is best effort: ORT still fuses at load time
        log.warning("ONNX transformer optimizer failed (%s); using the plain export", exc)
        return src
    return out


def fold_token_types(model: Any) -> None:
    """Add the type-0 token-type embedding to the position embeddings of each `EmbedLayerNormalization`
    and drop its token-type inputs, with the nodes that only computed them. `export_encoder` never passes
    token types, so BERT gives every token type 0: the sums are the same, and a short window's run skips
    16 small nodes."""
    from onnx import numpy_helper

    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    for node in graph.node:
        if node.op_type != "EmbedLayerNormalization" or len(node.input) < 5:
            continue
        position, types = node.input[3], node.input[4]
        if not node.input[1] or position not in initializers or types not in initializers:
            continue
        table = numpy_helper.to_array(initializers[position])
        first_type = numpy_helper.to_array(initializers[types])[0]
        folded = f"{position}_plus_token_type_0"
        graph.initializer.append(numpy_helper.from_array((table + first_type).astype(table.dtype), folded))
        node.input[1], node.input[3], node.input[4] = "", folded, ""
    prune_graph(graph)


def prune_graph(graph: Any) -> None:
    """Remove the nodes no graph output depends on, and the initializers no node reads."""
    needed = {output.name for output in graph.output}
    kept = []
    for node in reversed(graph.node):
        if any(name in needed for name in node.output):
            kept.append(node)
            needed.update(name for name in node.input if name)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    used = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(used)


def quantize_encoder(src: Path, out: Path) -> Path:
    """Dynamic int8 with per-output-channel weight scales on every MatMul and Attention of the encoder."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src),
        str(out),
        per_channel=True,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Attention"],
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    return out


def attach_heads(model: Any, heads: HeadParams, out: Path) -> Path:
    """Append the heads (fp32) to an encoder graph whose output is `embedding`; output `scores`."""
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    x = "embedding"
    nodes = []

    def constant(name: str, value: np.ndarray) -> str:
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), name))
        return name

    if heads.hidden_weight is not None and heads.hidden_bias is not None:
        w1 = constant("heads_hidden_weight_t", heads.hidden_weight.T)
        b1 = constant("heads_hidden_bias", heads.hidden_bias)
        nodes += [
            helper.make_node("MatMul", [x, w1], ["heads_hidden_mm"], name="heads_hidden_matmul"),
            helper.make_node("Add", ["heads_hidden_mm", b1], ["heads_hidden_pre"], name="heads_hidden_add"),
            helper.make_node("Relu", ["heads_hidden_pre"], ["heads_hidden"], name="heads_hidden_relu"),
        ]
        x = "heads_hidden"
    w = constant("heads_weight_t", heads.weight.T)
    b = constant("heads_bias", heads.bias)
    nodes += [
        helper.make_node("MatMul", [x, w], ["heads_mm"], name="heads_matmul"),
        helper.make_node("Add", ["heads_mm", b], ["heads_logits"], name="heads_add"),
        helper.make_node("Sigmoid", ["heads_logits"], ["scores"], name="heads_sigmoid"),
    ]
    graph.node.extend(nodes)
    graph.output.append(
        helper.make_tensor_value_info(
            "scores", onnx.TensorProto.FLOAT, ["batch", "rows", int(heads.weight.shape[0])]
        )
    )
    onnx.save(model, str(out))
    return out


def session_options(threads: int, spinning: bool = False) -> Any:
    """Session options for serving: `threads` intra-op threads, sequential, all fusions; no spinning
    unless asked."""
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # Spinning threads burn the other core while waiting: costly on a shared 2-core box for batches. The
    # one-window session spins: without it, every parallel operator of a short run waits for its second
    # thread to wake (measured 1.74-1.97 ms per window against 1.25-1.35 ms spinning). It stops spinning
    # when a run returns: left alone, the pool thread went on spinning for ~50 ms of CPU after each run,
    # a core taken from the HTTP server, the chat model and everything else on the machine.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if spinning:
        options.add_session_config_entry("session.force_spinning_stop", "1")
    return options


def open_session(path: Path, threads: int, spinning: bool = False) -> Any:
    """An ONNX Runtime CPU session on `path`."""
    ort = import_onnxruntime()
    return ort.InferenceSession(
        str(path),
        session_options(threads, spinning),
        providers=["CPUExecutionProvider"],
        disabled_optimizers=list(UNFUSED),
    )


def compare_graphs(reference: Path, candidate: Path, tokenizer: WindowTokenizer) -> dict[str, float]:
    """Cosine of window embeddings and score differences of `candidate` against `reference` on `PROBES`.

    Each window (with its sentences) is run alone and again inside one padded batch; the figures cover
    both.
    """
    windows = tokenizer.windows(list(PROBES), sentences=True)
    counts = windows.pooled_counts()
    sessions = [open_session(reference, 1), open_session(candidate, 1)]
    outputs: list[list[np.ndarray]] = [[], []]
    for i, session in enumerate(sessions):
        feeds = [
            batch_inputs([ids], [seg], tokenizer.pad_id)
            for ids, seg in zip(windows.ids, windows.segments, strict=True)
        ]
        feeds.append(batch_inputs(windows.ids, windows.segments, tokenizer.pad_id))
        *alone, together = [session.run(["embedding", "scores"], feed_dict(*feed)) for feed in feeds]
        # A window run alone has exactly its own rows; in the batch, rows past a window's count are padding.
        padding = np.arange(together[0].shape[1])[None, :] >= counts[:, None]
        outputs[i] = [np.concatenate([*(run[k][0] for run in alone), together[k][~padding]]) for k in (0, 1)]
    (ref_emb, ref_scores), (emb, scores) = outputs
    cosine = np.sum(ref_emb * emb, axis=1)
    diff = np.abs(ref_scores - scores)
    return {
        "probes": len(PROBES),
        "windows": len(windows.ids),
        "pooled": int(counts.sum()),
        "min_cosine": round(float(cosine.min()), 5),
        "mean_cosine": round(float(cosine.mean()), 5),
        "max_score_diff": round(float(diff.max()), 5),
        "mean_score_diff": round(float(diff.mean()), 5),
    }


SINGLE_PROBE = "Can you tell me how to get to the station from here? I have never been in this town before."
SINGLE_PROBE_WARMUP = 5
SINGLE_PROBE_RUNS = 15
SINGLE_SPEEDUP = 0.9
"""A one-window session is kept when its probe median is at most this fraction of the serving session's."""

SHARD_MIN_TEXTS = 8
"""Texts per worker from which a batch is split by text rather than by window."""


def shard_bounds(sizes: Sequence[int], shards: int) -> list[tuple[int, int]]:
    """Cut items of `sizes` into at most `shards` runs of consecutive items of about equal total size,
    as (start, end) pairs covering every item; no run is empty."""
    total = sum(sizes) or 1
    bounds: list[tuple[int, int]] = []
    start = 0
    running = 0
    for i, size in enumerate(sizes):
        running += size
        if running * shards >= total * (len(bounds) + 1) and len(bounds) < shards - 1 and i + 1 < len(sizes):
            bounds.append((start, i + 1))
            start = i + 1
    bounds.append((start, len(sizes)))
    return bounds


def feed_dict(input_ids: np.ndarray, mask: np.ndarray, pools: np.ndarray) -> dict[str, np.ndarray]:
    """The graph's inputs by name."""
    return {"input_ids": input_ids, "attention_mask": mask, "pool": pools}


class OnnxEncoder(WindowEncoder):
    """Runs a fused graph from the cache with ONNX Runtime: embeddings and head scores per window."""

    def __init__(
        self,
        model_path: str | Path | None,
        graph: GraphInfo,
        *,
        max_length: int | None = None,
        stride: int = 32,
        batch_size: int = 32,
        threads: int = 1,
        workers: int = 1,
        single_threads: int = 1,
        single_spinning: bool = True,
    ) -> None:
        path = resolve_model_path(model_path)
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        self.model_path = path
        self.max_length = window_settings(
            path, int(config.get("max_position_embeddings", 512)), max_length, stride
        )
        self.stride = stride
        self.batch_size = batch_size
        self.dim = int(config["hidden_size"])
        self.tokenizer = WindowTokenizer(path, self.max_length, stride)
        self.graph = graph
        self.threads = threads
        # Activations are quantised per tensor at run time: in a batch, a window's scores would depend on
        # its batchmates and their padding. int8 graphs therefore run one window per call (measured within
        # ~15% of batched throughput at ~30 tokens), spread over `workers` threads sharing one session.
        if graph.quantized:
            self.batch_size = 1
        self.workers = max(1, workers)
        self._pool: ThreadPoolExecutor | None = None
        self.session = open_session(graph.path, threads)
        self._outputs = ["embedding", "scores"]
        self.single_session: Any = None
        self.single_timing: dict[str, float] = {}
        self._single_lock = threading.Lock()
        self.single_spinning = single_spinning
        if single_threads > threads:
            self._try_single_session(single_threads)

    def _try_single_session(self, threads: int) -> None:
        """Open a second session with `threads` intra-op threads for one-window calls, and keep it only if
        it runs a short probe window clearly faster than the serving session on this machine (it does where
        compute dominates, e.g. int8 without VNNI; where per-operator overhead dominates it does not)."""
        session = open_session(self.graph.path, threads, spinning=self.single_spinning)
        windows = self.tokenizer.windows([SINGLE_PROBE], sentences=True)
        feed = feed_dict(*batch_inputs(windows.ids, windows.segments, self.tokenizer.pad_id))
        timings: dict[str, list[float]] = {"serving": [], "single": []}
        for run in range(SINGLE_PROBE_WARMUP + SINGLE_PROBE_RUNS):
            for name, candidate in (("serving", self.session), ("single", session)):
                started = time.perf_counter()
                candidate.run(self._outputs, feed)
                if run >= SINGLE_PROBE_WARMUP:
                    timings[name].append(time.perf_counter() - started)
        best = {name: float(np.median(values)) * 1000 for name, values in timings.items()}
        self.single_timing = {f"{name}_ms": round(value, 3) for name, value in best.items()}
        self.single_timing["threads"] = threads
        if best["single"] <= SINGLE_SPEEDUP * best["serving"]:
            self.single_session = session

    def _forward(
        self, input_ids: np.ndarray, mask: np.ndarray, pools: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        emb, scores = self.session.run(self._outputs, feed_dict(input_ids, mask, pools))
        return emb, scores

    def _forward_one(
        self, input_ids: np.ndarray, mask: np.ndarray, pools: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """One window on the multi-threaded session when there is one and no other call is using it
        (concurrent calls would fight over its threads); else on the serving session."""
        if self.single_session is not None and self._single_lock.acquire(blocking=False):
            try:
                emb, scores = self.single_session.run(self._outputs, feed_dict(input_ids, mask, pools))
                return emb, scores
            finally:
                self._single_lock.release()
        return self._forward(input_ids, mask, pools)

    def encode_chunks(self, texts: Sequence[str], sentences: bool = True) -> ChunkedEmbeddings:
        """As `WindowEncoder.encode_chunks`. Many texts are cut into one run of consecutive texts per worker,
        each tokenised and run whole in its worker: the tokenizer and ONNX Runtime release the GIL, so one
        run's Python overlaps another's model. A few texts spread their windows over the workers instead."""
        clean = [sanitize(t) for t in texts]
        if self.workers == 1 or len(clean) < SHARD_MIN_TEXTS * self.workers:
            return self._encode(clean, sentences, parallel=True)
        bounds = shard_bounds([len(t) for t in clean], self.workers)
        parts = list(
            self._executor().map(lambda b: self._encode(clean[b[0] : b[1]], sentences, False), bounds)
        )
        return ChunkedEmbeddings.concatenate(parts, [start for start, _ in bounds])

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="bastion-onnx")
        return self._pool

    def _map(
        self, batches: list[np.ndarray], ids: list[list[int]], segments: list[list[tuple[int, int, Any]]]
    ) -> list[tuple[np.ndarray, np.ndarray | None]]:
        if self.workers == 1 or len(batches) < 4:
            return super()._map(batches, ids, segments)
        return list(self._executor().map(lambda b: self._forward(*self._inputs(b, ids, segments)), batches))

    def close(self) -> None:
        """Stop the worker threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None


def load_onnx_encoder(
    root: Path,
    encoder_path: Path,
    heads: HeadParams,
    *,
    quantize: bool,
    max_length: int | None,
    stride: int,
    batch_size: int,
    threads: int,
    workers: int = 1,
    single_threads: int = 1,
    single_spinning: bool = True,
    on_build: Callable[[], None] | None = None,
) -> OnnxEncoder:
    """An `OnnxEncoder` on the cached graph, building it when missing and rebuilding it once if unreadable."""
    import_onnxruntime()
    path = resolve_model_path(encoder_path)
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    length = window_settings(path, int(config.get("max_position_embeddings", 512)), max_length, stride)
    key = graph_key(path, heads, quantize)
    for attempt in (1, 2):
        if on_build is not None and cached_graph(root, key) is None:
            on_build()
        graph = ensure_graph(root, path, heads, quantize=quantize, max_length=length, stride=stride)
        try:
            return OnnxEncoder(
                path,
                graph,
                max_length=length,
                stride=stride,
                batch_size=batch_size,
                threads=threads,
                workers=workers,
                single_threads=single_threads,
                single_spinning=single_spinning,
            )
        except (ConfigError, DependencyMissing):
            raise
        except Exception as exc:  # onnxruntime raises its own types for unreadable graphs
            if attempt == 2:
                raise ConfigError(f"cannot load the ONNX graph {graph.path}: {exc}") from exc
            log.warning("cached ONNX graph %s is unreadable (%s); rebuilding", graph.path, exc)
            discard(root, key)
    raise AssertionError("unreachable")
