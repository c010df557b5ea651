"""The embedded model's lexical part: word and character n-grams with one logistic head per category.

A text's features are its lower-cased word unigrams and bigrams and the character 2- to 5-grams of each
white-space separated word (padded with a space on both sides), weighted by sublinear term frequency
times inverse document frequency and scaled to unit length. The heads are logistic regressions on those
features, trained by `bastion moderation train` on the same rows as the embedding heads. The backend
serves `blend(embedded, lexical)`: for the categories with a lexical head, `(1 - weight) * embedded +
weight * lexical`. Spelling, slang and languages the encoder's vocabulary handles badly are where the
lexical part adds most.

Long texts are scored in pieces of `PIECE_CHARS` characters (overlapping by `PIECE_OVERLAP`), and a
category takes its highest piece, so a harmful passage is diluted only by the text of its own piece.

`ngrams.npz` beside `heads.npz` holds the vocabulary (one term per line, UTF-8), `idf` [V], `weight`
[V, 13] (float16), `bias` [13], `active` [13] (categories with a lexical head) and `blend_weight`. numpy
alone serves it; training needs scikit-learn and scipy (`bastion[ml]`).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from bastion.core.errors import ConfigError, DependencyMissing
from bastion.core.taxonomy import CATEGORY_KEYS

FILE_NAME = "ngrams.npz"
PIECE_CHARS = 1000
PIECE_OVERLAP = 200
CHAR_SIZES = (2, 3, 4, 5)
TOKEN_CACHE_SIZE = 200_000

_WORD = re.compile(r"\w\w+")
_SPACE = re.compile(r"\s+")


def word_terms(lower: str) -> list[str]:
    """The `w:` word unigrams and bigrams of lower-cased text."""
    words = _WORD.findall(lower)
    return ["w:" + w for w in words] + [f"w:{a} {b}" for a, b in pairwise(words)]


def char_terms(token: str) -> list[str]:
    """The `c:` character 2- to 5-grams of one white-space free token, padded with a space each side (a
    padded token no longer than n gives itself once, and no longer grams)."""
    padded = f" {token} "
    length = len(padded)
    out: list[str] = []
    for n in CHAR_SIZES:
        if length <= n:
            out.append("c:" + padded)
            break
        out.extend("c:" + padded[i : i + n] for i in range(length - n + 1))
    return out


def terms(text: str) -> list[str]:
    """The n-gram terms of `text`, repeats included: word terms, then each token's character terms."""
    lower = text.lower()
    out = word_terms(lower)
    for token in _SPACE.split(lower):
        if token:
            out += char_terms(token)
    return out


def pieces(text: str) -> list[str]:
    """`text` cut into pieces of at most `PIECE_CHARS` characters overlapping by `PIECE_OVERLAP` (one
    piece when it is short enough); cuts fall on white space where there is some."""
    if len(text) <= PIECE_CHARS:
        return [text]
    out = []
    start = 0
    while start < len(text):
        end = min(len(text), start + PIECE_CHARS)
        if end < len(text):
            space = text.rfind(" ", start + PIECE_CHARS // 2, end)
            end = space if space > start else end
        out.append(text[start:end])
        if end >= len(text):
            break
        start = max(start + 1, end - PIECE_OVERLAP)
    return out


@dataclass
class NgramModel:
    """Vocabulary, idf weights and per-category logistic heads over n-gram features."""

    vocabulary: dict[str, int]
    idf: np.ndarray
    weight: np.ndarray
    bias: np.ndarray
    active: np.ndarray
    blend_weight: float

    def __post_init__(self) -> None:
        self._token_cache: dict[str, list[int]] = {}

    def _char_indices(self, token: str) -> list[int]:
        found = self._token_cache.get(token)
        if found is None:
            lookup = self.vocabulary.get
            found = [i for t in char_terms(token) if (i := lookup(t)) is not None]
            if len(self._token_cache) >= TOKEN_CACHE_SIZE:
                self._token_cache.clear()
            self._token_cache[token] = found
        return found

    def row(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(feature indices, values) of the unit-length tf-idf row of one text."""
        lower = text.lower()
        lookup = self.vocabulary.get
        found = [i for t in word_terms(lower) if (i := lookup(t)) is not None]
        for token in _SPACE.split(lower):
            if token:
                found += self._char_indices(token)
        counts = Counter(found)
        keys = np.array(list(counts), dtype=np.int64)
        row = np.log(np.array(list(counts.values()), dtype=np.float32)) + 1.0
        row *= self.idf[keys]
        norm = float(np.sqrt(row @ row)) or 1.0
        return keys, row / norm

    def features(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CSR parts (indptr, indices, values) of the tf-idf rows of `texts`."""
        rows = [self.row(t) for t in texts]
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        indptr[1:] = np.cumsum([len(keys) for keys, _ in rows])
        if not rows:
            return indptr, np.zeros(0, np.int64), np.zeros(0, np.float32)
        return indptr, np.concatenate([k for k, _ in rows]), np.concatenate([v for _, v in rows])

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """Logits [n, 13] of the lexical heads (the bias alone for categories without one)."""
        out = np.tile(self.bias.astype(np.float64), (len(texts), 1))
        for t, text in enumerate(texts):
            keys, values = self.row(text)
            if len(keys):
                out[t] += values @ self.weight[keys]
        return out

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """Probabilities [n, 13]: the max over each text's pieces (0 for categories without a head)."""
        cut = [pieces(t) for t in texts]
        flat = [p for parts in cut for p in parts]
        probs = 1.0 / (1.0 + np.exp(-np.clip(self.logits(flat), -50, 50)))
        if len(flat) != len(texts):
            owner = np.repeat(np.arange(len(texts)), [len(parts) for parts in cut])
            starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
            probs = np.maximum.reduceat(probs, starts, axis=0)
        probs[:, ~self.active] = 0.0
        return probs

    def blend(self, embedded: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        """`embedded` scores [n, 13] of `texts` blended with the lexical heads where there is one."""
        out = np.array(embedded, dtype=np.float64, copy=True)
        if not len(texts) or not self.active.any():
            return out
        lexical = self.probabilities(texts)
        w = self.blend_weight
        out[:, self.active] = (1.0 - w) * out[:, self.active] + w * lexical[:, self.active]
        return out

    def save(self, folder: Path) -> Path:
        """Write `folder/ngrams.npz`; return its path."""
        ordered = sorted(self.vocabulary, key=self.vocabulary.__getitem__)
        blob = np.frombuffer("\n".join(ordered).encode("utf-8"), dtype=np.uint8)
        path = folder / FILE_NAME
        with path.open("wb") as fh:
            np.savez_compressed(
                fh,
                terms=blob,
                idf=self.idf.astype(np.float32),
                weight=self.weight.astype(np.float16),
                bias=self.bias.astype(np.float32),
                active=self.active.astype(bool),
                blend_weight=np.float32(self.blend_weight),
                categories=np.array(CATEGORY_KEYS),
            )
        return path

    @classmethod
    def load(cls, path: Path) -> NgramModel:
        """Read and check an `ngrams.npz`."""
        try:
            with np.load(path) as data:
                listed = data["terms"].tobytes().decode("utf-8").split("\n")
                idf = np.asarray(data["idf"], dtype=np.float32)
                weight = np.asarray(data["weight"], dtype=np.float32)
                bias = np.asarray(data["bias"], dtype=np.float32)
                active = np.asarray(data["active"], dtype=bool)
                blend_weight = float(data["blend_weight"])
                categories = [str(c) for c in data["categories"].tolist()]
        except (OSError, ValueError, KeyError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the n-gram heads in {path}: {exc}") from exc
        size = len(listed)
        if categories != list(CATEGORY_KEYS):
            raise ConfigError(f"n-gram heads in {path} do not cover the 13 categories in taxonomy order")
        if idf.shape != (size,) or weight.shape != (size, len(CATEGORY_KEYS)):
            raise ConfigError(
                f"n-gram heads in {path}: {size} terms but idf {idf.shape} and weight {weight.shape}"
            )
        if bias.shape != (len(CATEGORY_KEYS),) or active.shape != (len(CATEGORY_KEYS),):
            raise ConfigError(f"n-gram heads in {path} need a bias and an active flag per category")
        if not 0.0 <= blend_weight <= 1.0:
            raise ConfigError(f"n-gram heads in {path}: blend_weight {blend_weight} is not in [0, 1]")
        vocabulary = {term: i for i, term in enumerate(listed)}
        return cls(vocabulary, idf, weight, bias, active, blend_weight)

    @classmethod
    def in_folder(cls, folder: Path) -> NgramModel | None:
        """The folder's n-gram heads, or None when it has none (heads trained before they existed)."""
        path = folder / FILE_NAME
        return cls.load(path) if path.is_file() else None


@dataclass
class NgramSpec:
    """How the n-gram heads are trained (recorded in the card)."""

    min_df: int = 3
    max_features: int = 150_000
    c: float = 4.0
    min_positives: int = 20
    blend_weight: float = 0.3
    selection_folds: int = 5
    """Folds of source families for choosing the blended categories (`train.select_ngram_categories`)."""
    min_gain: float = 0.001
    """AUPRC the blend must gain on unseen sources for a category to be blended."""


def fit_ngrams(texts: Sequence[str], y: np.ndarray, mask: np.ndarray, spec: NgramSpec) -> NgramModel:
    """Vocabulary (terms in at least `min_df` texts, the `max_features` most frequent) and one L2-regularised
    logistic regression per category with at least `min_positives` positives among its labelled rows."""
    try:
        from scipy.sparse import csr_matrix
        from sklearn.linear_model import LogisticRegression
    except ImportError as exc:
        raise DependencyMissing(
            "training the n-gram heads needs scikit-learn and scipy; run pip install 'bastion[ml]'"
        ) from exc
    document_frequency: Counter[str] = Counter()
    for text in texts:
        document_frequency.update(set(terms(text)))
    kept = [t for t, df in document_frequency.items() if df >= spec.min_df]
    kept.sort(key=lambda t: (-document_frequency[t], t))
    kept = kept[: spec.max_features]
    vocabulary = {t: i for i, t in enumerate(kept)}
    n = len(texts)
    idf = np.array([math.log((1 + n) / (1 + document_frequency[t])) + 1.0 for t in kept], dtype=np.float32)
    n_cat = len(CATEGORY_KEYS)
    model = NgramModel(
        vocabulary,
        idf,
        np.zeros((len(kept), n_cat), np.float32),
        np.zeros(n_cat, np.float32),
        np.zeros(n_cat, bool),
        spec.blend_weight,
    )
    indptr, indices, values = model.features(texts)
    x = csr_matrix((values, indices, indptr), shape=(n, len(kept)))
    for j in range(n_cat):
        rows = np.flatnonzero(mask[:, j] > 0)
        target = y[rows, j]
        if int(target.sum()) < spec.min_positives or int((1 - target).sum()) < spec.min_positives:
            continue
        head: Any = LogisticRegression(C=spec.c, solver="liblinear", max_iter=300)
        head.fit(x[rows], target)
        model.weight[:, j] = head.coef_[0]
        model.bias[j] = head.intercept_[0]
        model.active[j] = True
    return model


def held_out_probabilities(
    texts: Sequence[str], y: np.ndarray, mask: np.ndarray, fold_of: np.ndarray, spec: NgramSpec
) -> np.ndarray:
    """Probabilities [n, 13] of each fold's texts by n-gram heads trained on the other folds (0 where a
    fold's heads had too few positives for a category)."""
    out = np.zeros((len(texts), len(CATEGORY_KEYS)))
    for fold in sorted(set(fold_of.tolist())):
        held = fold_of == fold
        train = np.flatnonzero(~held)
        model = fit_ngrams([texts[i] for i in train.tolist()], y[train], mask[train], spec)
        out[held] = model.probabilities([texts[i] for i in np.flatnonzero(held).tolist()])
    return out
