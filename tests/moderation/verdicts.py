"""Moderation verdicts built the way the service builds them, shared by moderation and gateway tests."""

from bastion.core.records import ModerationResult
from bastion.core.taxonomy import CATEGORY_KEYS
from bastion.moderation.backends.base import BackendScores
from bastion.moderation.policy import combine

HALF = dict.fromkeys(CATEGORY_KEYS, 0.5)
THREAT_TEXT = "Nice recipe. I will hurt you."
THREAT = (13, len(THREAT_TEXT))


def threat_verdict(harassment: float = 0.3, own_spans: bool = False) -> ModerationResult:
    """`THREAT_TEXT` explained: harassment/threatening flagged on the threat; harassment scored
    `harassment` on its own (below 0.5, it is flagged only through the subcategory), with spans of its own
    on the first sentence when `own_spans`."""
    spans = {"harassment/threatening": [THREAT]}
    if own_spans:
        spans["harassment"] = [(0, 12)]
    scores = BackendScores({"harassment": harassment, "harassment/threatening": 0.8}, spans=spans)
    return combine(THREAT_TEXT, [scores], [HALF], {}, explain=True)
