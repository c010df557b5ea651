"""The gateway's verdict for one side, from moderation results as the moderation service builds them."""

from bastion.core.taxonomy import CATEGORY_KEYS
from bastion.gateway.policy import evaluate, redact
from bastion.gateway.settings import StageRules
from bastion.moderation.backends.base import BackendScores
from bastion.moderation.policy import combine

HALF = dict.fromkeys(CATEGORY_KEYS, 0.5)


def test_a_parent_flagged_through_its_subcategory_is_redacted_where_the_subcategory_was() -> None:
    text = "Nice recipe. I will hurt you."
    threat = (13, len(text))
    result = combine(
        text,
        [
            BackendScores(
                {"harassment": 0.3, "harassment/threatening": 0.8}, spans={"harassment/threatening": [threat]}
            )
        ],
        [HALF],
        {},
        explain=True,
    )
    rules = StageRules.model_validate(
        {"categories": {"harassment": {"action": "redact"}, "harassment/threatening": {"action": "redact"}}}
    )
    verdict = evaluate([result], rules)
    assert verdict.action == "redact"
    assert verdict.categories == {"harassment": "redact", "harassment/threatening": "redact"}
    assert redact(text, verdict.spans[0]) == "Nice recipe. [redacted]"
    no_spans = combine(text, [BackendScores({"harassment/threatening": 0.8})], [HALF], {}, explain=True)
    assert evaluate([no_spans], rules).action == "block"  # nothing to redact: refuse instead
