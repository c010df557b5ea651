"""The gateway's verdict for one side, from moderation results as the moderation service builds them."""

from bastion.gateway.policy import evaluate, redact
from bastion.gateway.settings import StageRules
from bastion.moderation.backends.base import BackendScores
from bastion.moderation.policy import combine
from tests.moderation.verdicts import HALF, THREAT_TEXT, threat_verdict


def test_a_parent_flagged_through_its_subcategory_is_redacted_where_the_subcategory_was() -> None:
    rules = StageRules.model_validate(
        {"categories": {"harassment": {"action": "redact"}, "harassment/threatening": {"action": "redact"}}}
    )
    verdict = evaluate([threat_verdict()], rules)
    assert verdict.action == "redact"
    assert verdict.categories == {"harassment": "redact", "harassment/threatening": "redact"}
    assert redact(THREAT_TEXT, verdict.spans[0]) == "Nice recipe. [redacted]"
    no_spans = combine(
        THREAT_TEXT, [BackendScores({"harassment/threatening": 0.8})], [HALF], {}, explain=True
    )
    assert evaluate([no_spans], rules).action == "block"  # nothing to redact: refuse instead
