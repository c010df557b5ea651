"""The moderation service: resolves a model name, runs its backends, applies its policy."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from bastion.core.errors import BastionError, ConfigError, ModelNotFound
from bastion.core.records import ModerationResult
from bastion.core.settings import ModerationModelSpec, Settings
from bastion.core.taxonomy import SUBCATEGORIES
from bastion.moderation.backends.base import BackendScores, ModerationBackend, create_backend
from bastion.moderation.policy import backend_flags, combine


def clean_text(text: str) -> str:
    """Text every backend can take: lone surrogates become U+FFFD, NUL bytes are dropped."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text


class ModerationModel:
    """A configured moderation model: its backends, their thresholds, and its policy."""

    def __init__(self, name: str, spec: ModerationModelSpec, settings: Settings) -> None:
        self.name = name
        self.spec = spec
        policy = settings.moderation.policies[spec.policy]
        self.policy_thresholds = dict(policy.thresholds)
        self.backends: list[ModerationBackend] = []
        try:
            for backend_spec in spec.backends:
                self.backends.append(create_backend(backend_spec, settings))
        except BaseException:
            self.close()
            raise
        self.backend_thresholds = [backend.default_thresholds for backend in self.backends]
        self._lock = threading.Lock()
        self._helper: ThreadPoolExecutor | None = None

    @property
    def thresholds(self) -> dict[str, float]:
        """The effective threshold per category: the policy's, else the first backend's."""
        return {**self.backend_thresholds[0], **self.policy_thresholds}

    def backend_thresholds_for(self, threshold_set: str | None) -> list[dict[str, float]]:
        """Each backend's thresholds of the named set (`None`/`default`: the defaults; a backend that
        does not ship the set keeps its defaults)."""
        if threshold_set in (None, "default"):
            return self.backend_thresholds
        return [
            backend.threshold_sets.get(threshold_set, defaults)
            for backend, defaults in zip(self.backends, self.backend_thresholds, strict=True)
        ]

    def moderate(
        self,
        texts: Sequence[str],
        explain: bool = False,
        threshold_set: str | None = None,
        word_spans: bool = True,
    ) -> list[ModerationResult]:
        """A verdict per text, in order; flags use the named threshold set (policy overrides still win).

        With `explain`, each flagged category comes with the spans behind it: the words that drove it
        (`ModerationBackend.explain`, asked of the backends whose own thresholds it passed, else of the
        highest-scoring one), or with `word_spans=False` the windows, sentences and list matches the
        scores came with (no extra inference; the gateway redacts those)."""
        cleaned = [clean_text(t) for t in texts]
        if not cleaned:
            return []
        thresholds = self.backend_thresholds_for(threshold_set)
        with self._lock:
            per_backend = self._score_all(cleaned)
        for backend, scores in zip(self.backends, per_backend, strict=True):
            if len(scores) != len(cleaned):
                raise ConfigError(
                    f"backend {backend.plugin_name!r} returned {len(scores)} results for {len(cleaned)}"
                )
        founds = [[scores[i] for scores in per_backend] for i in range(len(cleaned))]
        results = [
            combine(text, found, thresholds, self.policy_thresholds, explain and not word_spans)
            for text, found in zip(cleaned, founds, strict=True)
        ]
        if not (explain and word_spans):
            return results
        todo = [i for i, result in enumerate(results) if result.flagged_categories]
        if todo:
            with self._lock:
                narrowed = self._explained(
                    [cleaned[i] for i in todo],
                    [founds[i] for i in todo],
                    thresholds,
                    [results[i].flagged_categories for i in todo],
                )
            for i, found in zip(todo, narrowed, strict=True):
                founds[i] = found
        return [
            combine(text, found, thresholds, self.policy_thresholds, True)
            for text, found in zip(cleaned, founds, strict=True)
        ]

    def _explained(
        self,
        texts: list[str],
        founds: list[list[BackendScores]],
        thresholds: list[dict[str, float]],
        flagged: list[list[str]],
    ) -> list[list[BackendScores]]:
        """Each text's backend scores with their spans replaced by each backend's explanation of the
        flagged categories it drove: those where it passed its own threshold (or flagged), else, for a
        category no backend passed alone (a policy threshold), the backend with the highest score. A
        parent no backend flagged alone but with a flagged subcategory is not explained: `combine` gives it
        the subcategory's spans. A category none of its drivers can narrow to words keeps the spans its
        scores came with. Each backend explains all the texts in one call."""
        drivers: list[dict[str, list[int]]] = []
        for found, keys in zip(founds, flagged, strict=True):
            own = [
                set(backend_flags(scores, limits)) for scores, limits in zip(found, thresholds, strict=True)
            ]
            by_any = set().union(*own)
            through_child = {parent for child, parent in SUBCATEGORIES if child in keys} - by_any
            drivers.append(
                {
                    key: [b for b, flags in enumerate(own) if key in flags]
                    or [max(range(len(found)), key=lambda b: found[b].scores.get(key, 0.0))]
                    for key in keys
                    if key not in through_child
                }
            )
        explained: list[list[dict[str, list[tuple[int, int]]]]] = [[{} for _ in self.backends] for _ in texts]
        for b, backend in enumerate(self.backends):
            asked = [[key for key, which in d.items() if b in which] for d in drivers]
            idx = [t for t, keys in enumerate(asked) if keys]
            if not idx:
                continue
            answers = backend.explain_many(
                [texts[t] for t in idx], [founds[t][b] for t in idx], [asked[t] for t in idx]
            )
            for t, answer in zip(idx, answers, strict=True):
                explained[t][b] = answer
        out = []
        for found, by_backend, d in zip(founds, explained, drivers, strict=True):
            for key, which in d.items():
                if not any(by_backend[b].get(key) for b in which):
                    for b in which:
                        by_backend[b][key] = list(found[b].spans.get(key, []))
            out.append(
                [replace(scores, spans=spans) for scores, spans in zip(found, by_backend, strict=True)]
            )
        return out

    def _score_all(self, texts: list[str]) -> list[list[Any]]:
        """Every backend's scores. The other backends run on a helper thread while the first (the model,
        whose runtime releases the GIL) runs here: their Python fills its waits. Even for one short text
        this was faster through the gateway in paired runs (README, gateway overhead) than running them
        after the model."""
        if len(self.backends) == 1:
            return [backend.score(texts) for backend in self.backends]
        if self._helper is None:
            self._helper = ThreadPoolExecutor(1, thread_name_prefix="bastion-moderation")
        others = self._helper.submit(lambda: [backend.score(texts) for backend in self.backends[1:]])
        first = self.backends[0].score(texts)
        return [first, *others.result()]

    def describe(self) -> dict[str, Any]:
        """The exact spec behind this model's scores, for replayable reports."""
        return {
            "name": self.name,
            "policy": self.spec.policy,
            "thresholds": self.thresholds,
            "backends": [b.describe() for b in self.backends],
        }

    def close(self) -> None:
        """Release every backend (and the helper thread)."""
        if self._helper is not None:
            self._helper.shutdown(wait=False)
            self._helper = None
        for backend in self.backends:
            backend.close()


class ModerationService:
    """Loads configured models on first use and moderates texts with them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._models: dict[str, ModerationModel] = {}
        self._lock = threading.Lock()

    def resolve(self, name: str | None) -> str:
        """The configured model `name` refers to; ModelNotFound otherwise."""
        resolved = self.settings.moderation.resolve(name)
        if resolved is None:
            known = ", ".join(sorted([*self.settings.moderation.models, *self.settings.moderation.aliases]))
            raise ModelNotFound(
                f"The model '{name}' does not exist. Configured models: {known}", param="model"
            )
        return resolved

    def model(self, name: str | None = None) -> ModerationModel:
        """The loaded model for `name` (default model when None)."""
        resolved = self.resolve(name)
        with self._lock:
            model = self._models.get(resolved)
            if model is None:
                try:
                    model = ModerationModel(
                        resolved, self.settings.moderation.models[resolved], self.settings
                    )
                except BastionError:
                    raise
                except Exception as exc:
                    raise ConfigError(f"moderation model {resolved!r} failed to load: {exc}") from exc
                self._models[resolved] = model
            return model

    def moderate(
        self,
        texts: Sequence[str],
        model: str | None = None,
        explain: bool = False,
        threshold_set: str | None = None,
        word_spans: bool = True,
    ) -> tuple[str, list[ModerationResult]]:
        """(resolved model name, a verdict per text); see `ModerationModel.moderate`."""
        loaded = self.model(model)
        return loaded.name, loaded.moderate(
            texts, explain=explain, threshold_set=threshold_set, word_spans=word_spans
        )

    def close(self) -> None:
        """Release every loaded model."""
        with self._lock:
            for model in self._models.values():
                model.close()
            self._models.clear()
