"""`profanity`: the offensive-language model of the `alt-profanity-check` package as a moderation backend.

That model (word tf-idf, five linear SVMs with sigmoid calibration, trained by its authors on a large set
of human-labelled toxic comments) ranks insults and abuse of ordinary users well, the kind of text the
public sets behind the embedded model hold little of. Its probability is reported for one category
(`harassment` by default); combined by max with the embedded model's scores it raises any-harm AUPRC on
the test sources (README, "Offensive-language backend").

The package is only read, never run per text: its vocabulary, idf and the SVMs' weights and calibration
are extracted once (that needs scikit-learn and joblib) into `$BASTION_HOME/cache/profanity/` and scored
here in plain Python, about 10 microseconds per short text against ~3 ms for a call of the package itself
(its per-call overhead). `tests/moderation/test_profanity.py` checks both give the same probabilities.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bastion.core.errors import ConfigError, DependencyMissing
from bastion.core.settings import Settings
from bastion.core.taxonomy import CATEGORY_KEYS, check_category
from bastion.moderation.backends.base import BackendScores, ModerationBackend, moderation_backends
from bastion.moderation.explain import join_spans

PACKAGE = "profanity_check"
TOKEN = re.compile(r"(?u)\b\w\w+\b")  # the package's vectorizer: scikit-learn's default word pattern
CARD = "profanity.json"
BENIGN_SOURCE_FPR = 0.01


class ProfanityOptions(BaseModel):
    """Options of the `profanity` backend."""

    model_config = ConfigDict(extra="forbid")

    category: str = Field("harassment", description="The category its probability is reported for.")
    threshold: float | None = Field(
        None, ge=0.0, le=1.0, description="Flag threshold; default: the packaged card's (`default` set)."
    )
    strict_threshold: float | None = Field(
        None, ge=0.0, le=1.0, description="Threshold of the `strict` set; default: the packaged card's."
    )

    _known_category = field_validator("category")(check_category)


def package_files() -> list[Path]:
    """The package's vectorizer and model files, found without importing it (its import loads both with
    scikit-learn: ~85 MB and 2 s); DependencyMissing when it is not installed."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DependencyMissing(
            "the profanity backend reads the alt-profanity-check package; run pip install "
            "alt-profanity-check (or 'bastion[ml]')"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    files = [folder / "vectorizer.joblib", folder / "model.joblib"]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DependencyMissing(f"alt-profanity-check is installed without its model files: {missing}")
    return files


@dataclass
class ProfanityWeights:
    """The package's model as arrays: vocabulary, idf, and per SVM its weights and sigmoid calibration."""

    vocabulary: dict[str, int]
    idf: np.ndarray  # [V]
    weights: np.ndarray  # [V, K]: each SVM's coefficient times the idf
    intercepts: np.ndarray  # [K]
    slopes: np.ndarray  # [K]: calibration p = 1 / (1 + exp(slope * decision + offset))
    offsets: np.ndarray  # [K]

    @classmethod
    def extract(cls) -> ProfanityWeights:
        """Read them from the installed package (needs scikit-learn and joblib)."""
        vectorizer_file, model_file = package_files()
        try:
            import joblib
        except ImportError as exc:
            raise DependencyMissing(
                "reading alt-profanity-check's model needs joblib and scikit-learn"
            ) from exc
        import warnings

        with warnings.catch_warnings():  # pickled by an older scikit-learn: the arrays are what we read
            warnings.simplefilter("ignore")
            vectorizer = joblib.load(vectorizer_file)
            model = joblib.load(model_file)
        expected = {"lowercase": True, "ngram_range": (1, 1), "analyzer": "word", "norm": "l2"}
        expected |= {"use_idf": True, "sublinear_tf": False, "binary": False, "strip_accents": None}
        found = {k: getattr(vectorizer, k, None) for k in expected}
        if found != expected or vectorizer.token_pattern != TOKEN.pattern:
            raise ConfigError(f"alt-profanity-check's vectorizer is not the one this backend reads: {found}")
        idf = np.asarray(vectorizer.idf_, dtype=np.float64)
        vocabulary = {str(word): int(index) for word, index in vectorizer.vocabulary_.items()}
        folds = model.calibrated_classifiers_
        coef = np.stack([np.asarray(f.estimator.coef_, dtype=np.float64).ravel() for f in folds], axis=1)
        return cls(
            vocabulary=vocabulary,
            idf=idf,
            weights=coef * idf[:, None],
            intercepts=np.array([float(np.ravel(f.estimator.intercept_)[0]) for f in folds]),
            slopes=np.array([float(f.calibrators[0].a_) for f in folds]),
            offsets=np.array([float(f.calibrators[0].b_) for f in folds]),
        )

    def save(self, path: Path) -> None:
        """Write the arrays (and the vocabulary in index order) to an npz file."""
        words = np.empty(len(self.vocabulary), dtype=object)
        for word, index in self.vocabulary.items():
            words[index] = word
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(
            tmp,
            words=np.array(words.tolist(), dtype=str),
            idf=self.idf,
            weights=self.weights,
            intercepts=self.intercepts,
            slopes=self.slopes,
            offsets=self.offsets,
        )
        tmp.replace(path)

    @classmethod
    def read(cls, path: Path) -> ProfanityWeights:
        """The arrays `save` wrote."""
        with np.load(path) as data:
            return cls(
                vocabulary={str(w): i for i, w in enumerate(data["words"].tolist())},
                idf=data["idf"],
                weights=data["weights"],
                intercepts=data["intercepts"],
                slopes=data["slopes"],
                offsets=data["offsets"],
            )

    @classmethod
    def load(cls, cache: Path) -> ProfanityWeights:
        """From the cache, extracting them first when the package's files are new to it."""
        digest = hashlib.sha256()
        for file in package_files():
            digest.update(file.read_bytes())
        path = cache / f"weights-{digest.hexdigest()[:16]}.npz"
        if path.is_file():
            return cls.read(path)
        weights = cls.extract()
        weights.save(path)
        return weights

    def __post_init__(self) -> None:
        # Per word: (idf, each SVM's weight times the idf), as Python floats. A short text has a handful
        # of words: plain loops over them beat numpy's per-call overhead (~8 against ~30 microseconds).
        self._table = {
            word: (float(self.idf[i]), *map(float, self.weights[i])) for word, i in self.vocabulary.items()
        }
        self._calibration = list(
            zip(self.intercepts.tolist(), self.slopes.tolist(), self.offsets.tolist(), strict=True)
        )

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """The package's `predict_prob` for each text: the mean of the calibrated SVMs' probabilities of
        its l2-normalised tf-idf vector."""
        out = np.empty(len(texts), dtype=np.float64)
        folds = len(self._calibration)
        for i, text in enumerate(texts):
            sums = [0.0] * folds
            norm2 = 0.0
            for word, count in Counter(TOKEN.findall(text.lower())).items():
                row = self._table.get(word)
                if row is None:
                    continue
                norm2 += (count * row[0]) ** 2
                for k in range(folds):
                    sums[k] += count * row[k + 1]
            scale = 1.0 / math.sqrt(norm2) if norm2 > 0.0 else 0.0
            total = 0.0
            for k, (intercept, slope, offset) in enumerate(self._calibration):
                z = slope * (intercept + sums[k] * scale) + offset
                total += 1.0 / (1.0 + math.exp(min(z, 700.0)))  # exp overflows past ~709
            out[i] = total / folds
        return out

    def word_spans(self, text: str, share: float = 0.5) -> list[tuple[int, int]]:
        """Where `text`'s offensive words are: every occurrence of each word whose weight toward
        "offensive" (the SVMs' weight times its idf, each scaled by its calibration's slope, averaged) is
        positive and at least `share` of the largest such weight in the text."""
        weight: dict[str, float] = {}
        found: list[tuple[str, tuple[int, int]]] = []
        for match in TOKEN.finditer(text):
            word = match.group().lower()
            row = self._table.get(word)
            if row is None:
                continue
            if word not in weight:
                # p = sigmoid(-z) with z = slope * decision + offset: a word pushes p up by -slope * weight.
                weight[word] = sum(-c[1] * w for c, w in zip(self._calibration, row[1:], strict=True))
            found.append((word, match.span()))
        top = max(weight.values(), default=0.0)
        if top <= 0.0:
            return []
        return [span for word, span in found if weight[word] >= share * top]


def packaged_card() -> dict[str, Any]:
    """`artifacts/profanity.json`: the thresholds chosen on the training sources, their rule and data."""
    path = Path(str(resources.files("bastion.moderation") / "artifacts" / CARD))
    try:
        card: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    return card


def card_markdown(card: dict[str, Any]) -> str:
    """The packaged card (`fit_card`) as Markdown."""
    category = card["category"]
    auprc, positives = card["metrics"][f"{category}_auprc"], card["metrics"]["positives"]

    def cell(value: float | None) -> str:
        return "–" if value is None else f"{value:.3f}"

    return "\n".join(
        [
            "# Offensive-language backend (alt-profanity-check)",
            "",
            f"{card['model']}: word tf-idf and five calibrated linear SVMs, trained by the package's "
            "authors on their own labelled comments (none of Bastion's data). Combined with the other "
            "backends by max.",
            "",
            f"| {category} | training sources | test sources |",
            "|---|---|---|",
            f"| AUPRC | {cell(auprc['training_sources'])} | {cell(auprc['test_sources'])} |",
            f"| positives | {positives['training_sources']} | {positives['test_sources']} |",
            "",
            "## Thresholds",
            "",
            f"- `default` {card['thresholds']['default']}: {card['threshold_rules']['default']}.",
            f"- `strict` {card['thresholds']['strict']}: {card['threshold_rules']['strict']}.",
            "",
            "## Known limits",
            "",
            "- English words only, one at a time: insults without an offensive word are missed, and quoted, "
            "reported or friendly profanity is scored like abuse.",
            f"- Only {category} is scored; threats, hate and the other categories come from the other "
            "backends.",
            "",
        ]
    )


@moderation_backends.register("profanity")
class ProfanityBackend(ModerationBackend):
    """alt-profanity-check's probability of offensive language, reported for one category."""

    Options = ProfanityOptions

    def __init__(self, options: BaseModel, settings: Settings) -> None:
        super().__init__(options, settings)
        assert isinstance(options, ProfanityOptions)
        self.category: str = options.category
        self.weights = ProfanityWeights.load(settings.cache_dir("profanity"))
        self._card = packaged_card()
        chosen = self._card["thresholds"]
        self._threshold = options.threshold if options.threshold is not None else float(chosen["default"])
        strict = options.strict_threshold
        self._strict = strict if strict is not None else float(chosen["strict"])

    def _thresholds(self, value: float) -> dict[str, float]:
        # Only its own category can flag; the others are never scored above 0.
        return {key: value if key == self.category else 1.0 for key in CATEGORY_KEYS}

    @property
    def default_thresholds(self) -> dict[str, float]:
        """The `default` threshold for its category."""
        return self._thresholds(self._threshold)

    @property
    def threshold_sets(self) -> dict[str, dict[str, float]]:
        """`strict`: the threshold chosen to flag at most 1 % of benign training texts."""
        return {"strict": self._thresholds(self._strict)}

    @property
    def card(self) -> dict[str, Any] | None:
        """`artifacts/profanity.json`."""
        return self._card

    def card_markdown(self) -> str | None:
        """The packaged card for people to read."""
        return card_markdown(self._card)

    def score(self, texts: Sequence[str]) -> list[BackendScores]:
        """The probability of offensive language, for the configured category."""
        return [BackendScores(scores={self.category: float(p)}) for p in self.weights.probabilities(texts)]

    def explain(
        self, text: str, scores: BackendScores, categories: Sequence[str]
    ) -> dict[str, list[tuple[int, int]]]:
        """The offensive words of `text` (`ProfanityWeights.word_spans`), for its category."""
        if self.category not in categories:
            return {}
        return {self.category: join_spans(self.weights.word_spans(text), text)}

    def describe(self) -> dict[str, Any]:
        """Plugin, options, the thresholds in use and the package's version."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            package = version("alt-profanity-check")
        except PackageNotFoundError:
            package = None
        return {
            **super().describe(),
            "package": {"alt-profanity-check": package},
            "thresholds": {"default": self._threshold, "strict": self._strict},
        }


def fit_card(settings: Settings, seed: int = 0, category: str = "harassment") -> dict[str, Any]:
    """The packaged card: thresholds for `category` chosen on the embedded model's training sources (the
    test sources left out). `default`: the heads' rule (the max-F1 threshold raised until precision
    reaches 0.6), raised further until at most 1 % of the texts of benign sources are flagged, since a
    second opinion beside the heads should add few false flags; `strict`: the heads' strict rule (at
    most 5 % of the benign rows flagged). Also the package's AUPRC for the category on those rows and on
    the test sources."""
    import random

    from bastion.moderation.datasets import load_all
    from bastion.moderation.evaluate import average_precision
    from bastion.moderation.train import (
        TrainSpec,
        is_benign,
        is_test_source,
        precision_threshold,
        select_rows,
    )

    spec = TrainSpec()
    rows = select_rows(load_all(settings.data_dir).rows, spec, random.Random(seed))
    weights = ProfanityWeights.load(settings.cache_dir("profanity"))
    scores = weights.probabilities([r.text[: spec.max_train_chars] for r in rows])
    test = np.array([is_test_source(r.source, spec) for r in rows], dtype=bool)
    label = np.array([-1 if (v := r.labels.get(category)) is None else int(v) for r in rows])
    benign = np.array([is_benign(r) for r in rows], dtype=bool)
    benign_source = np.array([r.source.startswith("benign:") for r in rows], dtype=bool)

    def auprc(where: np.ndarray) -> float | None:
        known = where & (label >= 0)
        ys = label[known]
        if not 0 < ys.sum() < len(ys):
            return None
        found = average_precision(ys, scores[known])
        return None if found is None else float(found)

    train = ~test & (label >= 0)
    rule = precision_threshold(label[train], scores[train], spec.precision_target, spec.min_threshold)
    default = max(rule, float(np.quantile(scores[~test & benign_source], 1.0 - BENIGN_SOURCE_FPR)))
    cap = float(np.quantile(scores[~test & benign], 1.0 - spec.strict_benign_fpr))
    strict = float(np.clip(max(default, cap), spec.min_threshold, 0.95))
    return {
        "model": f"alt-profanity-check's probability of offensive language, reported as {category}",
        "category": category,
        "thresholds": {"default": round(default, 4), "strict": round(strict, 4)},
        "threshold_rules": {
            "default": f"on the {int(train.sum())} training-source rows labelled for {category}: the max-F1 "
            f"threshold, raised until precision reaches {spec.precision_target} ({rule:.4f}), then until at "
            f"most {BENIGN_SOURCE_FPR:.0%} of the {int((~test & benign_source).sum())} texts of benign "
            "training sources are flagged",
            "strict": f"the default raised until at most {spec.strict_benign_fpr:.0%} of the "
            f"{int((~test & benign).sum())} benign training-source rows are flagged",
        },
        "metrics": {
            f"{category}_auprc": {"training_sources": auprc(~test), "test_sources": auprc(test)},
            "positives": {
                "training_sources": int((label[~test] == 1).sum()),
                "test_sources": int((label[test] == 1).sum()),
            },
        },
        "seed": seed,
        "test_sources": list(spec.test_sources),
    }
