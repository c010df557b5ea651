"""The heads of the embedded model: the one in-memory form of what `heads.npz` holds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bastion.core.errors import ConfigError
from bastion.core.taxonomy import CATEGORY_KEYS


@dataclass
class HeadParams:
    """Head weights on raw embeddings: optional shared ReLU layer, then one logit per category."""

    weight: np.ndarray
    bias: np.ndarray
    hidden_weight: np.ndarray | None = None
    hidden_bias: np.ndarray | None = None
    sha256: str = ""
    encoder_fingerprint: str | None = None

    @classmethod
    def load(cls, file: Path) -> HeadParams:
        """Read and check a `heads.npz` (13 categories in taxonomy order, shapes that fit together)."""
        from bastion.moderation.train import sha256_file

        try:
            with np.load(file) as data:
                categories = [str(c) for c in data["categories"].tolist()]
                arrays = {
                    name: np.asarray(data[name], dtype=np.float32) if name in data else None
                    for name in ("weight", "bias", "hidden_weight", "hidden_bias")
                }
                fingerprint = str(data["encoder_fingerprint"]) if "encoder_fingerprint" in data else None
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"cannot read heads from {file}: {exc}") from exc
        weight, bias = arrays["weight"], arrays["bias"]
        hidden_weight, hidden_bias = arrays["hidden_weight"], arrays["hidden_bias"]
        if weight is None or bias is None:
            raise ConfigError(f"{file} must hold `weight` and `bias`")
        if categories != list(CATEGORY_KEYS) or weight.shape[0] != len(CATEGORY_KEYS):
            raise ConfigError(f"heads in {file} do not cover the 13 categories in taxonomy order")
        if bias.shape != (len(CATEGORY_KEYS),):
            raise ConfigError(f"heads in {file} have a bias of shape {bias.shape}, expected (13,)")
        if (hidden_weight is None) != (hidden_bias is None):
            raise ConfigError(f"heads in {file} need both hidden_weight and hidden_bias, or neither")
        if hidden_weight is not None and hidden_bias is not None:
            width = hidden_weight.shape[0]
            if hidden_bias.shape != (width,) or weight.shape[1] != width:
                raise ConfigError(
                    f"heads in {file}: hidden_weight {hidden_weight.shape}, hidden_bias "
                    f"{hidden_bias.shape} and weight {weight.shape} do not fit together"
                )
        return cls(weight, bias, hidden_weight, hidden_bias, sha256_file(file), fingerprint)

    @property
    def input_dim(self) -> int:
        """The embedding size the heads take."""
        return int((self.hidden_weight if self.hidden_weight is not None else self.weight).shape[1])

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Sigmoid probabilities [n, 13] for embeddings [n, d]."""
        return 1.0 / (1.0 + np.exp(-np.clip(self.logits(x), -50.0, 50.0)))

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Logits [n, 13] for embeddings [n, d]."""
        h = x.astype(np.float64)
        if self.hidden_weight is not None and self.hidden_bias is not None:
            h = np.maximum(h @ self.hidden_weight.T.astype(np.float64) + self.hidden_bias, 0.0)
        return h @ self.weight.T.astype(np.float64) + self.bias.astype(np.float64)

    def calibrated(self, scale: np.ndarray, shift: np.ndarray) -> HeadParams:
        """Platt scaling `sigmoid(scale * logit + shift)` folded into the last layer."""
        return HeadParams(
            (self.weight * scale[:, None]).astype(np.float32),
            (self.bias * scale + shift).astype(np.float32),
            self.hidden_weight,
            self.hidden_bias,
        )

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays stored in heads.npz (without categories and fingerprint)."""
        out = {"weight": self.weight.astype(np.float32), "bias": self.bias.astype(np.float32)}
        if self.hidden_weight is not None and self.hidden_bias is not None:
            out["hidden_weight"] = self.hidden_weight.astype(np.float32)
            out["hidden_bias"] = self.hidden_bias.astype(np.float32)
        return out
