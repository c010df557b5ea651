"""The heads of the embedded model: the one in-memory form of what `heads.npz` holds."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class HeadParams:
    """Head weights on raw embeddings: optional shared ReLU layer, then one logit per category."""

    weight: np.ndarray
    bias: np.ndarray
    hidden_weight: np.ndarray | None = None
    hidden_bias: np.ndarray | None = None
    sha256: str = ""

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
