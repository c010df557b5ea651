"""Gateway settings: named policies (chosen per API key), streaming windows and limits.

Plugged into the service settings as `Settings.gateway` (`[gateway.policies.NAME]` in `bastion.toml`).

A policy says, for the input and for the output, what happens when a category is flagged:
`block` (refuse), `flag` (record it, answer anyway), `redact` (replace the matching spans, for list
matches; a flag without spans is blocked), `allow` (ignore the category). A rule's `threshold`, when set,
replaces the moderation model's own flag for that category.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bastion.core.taxonomy import check_category

Action = Literal["block", "flag", "redact", "allow"]
SEVERITY: dict[str, int] = {"allow": 0, "flag": 1, "redact": 2, "block": 3}
DEFAULT_REFUSAL = "I'm sorry, but I can't help with that request."


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CategoryRule(_Strict):
    """What a flagged category does, and optionally the score at which it counts as flagged."""

    action: Action = Field("block", description="block, flag, redact (list matches) or allow.")
    threshold: float | None = Field(None, ge=0, le=1, description="Overrides the moderation model's flag.")


DEFAULT_RULES: dict[str, CategoryRule] = {action: CategoryRule(action=action) for action in get_args(Action)}
"""The rule of a category without one of its own, per default action (built once: read on every turn)."""


class StageRules(_Strict):
    """The rules for one side of the exchange (input or output)."""

    enabled: bool = Field(True, description="Moderate this side at all.")
    default_action: Action = Field("block", description="For flagged categories without a rule.")
    categories: dict[str, CategoryRule] = Field(default_factory=dict, description="Per-category rules.")
    threshold_set: str = Field(
        "strict",
        description="The moderation model's threshold set that flags categories without a threshold of "
        "their own: 'strict' (the embedded model's set tuned for few false positives on everyday text) "
        "or 'default' (the thresholds /v1/moderations uses). A backend without the set keeps its defaults.",
    )

    @field_validator("categories")
    @classmethod
    def _known(cls, value: dict[str, CategoryRule]) -> dict[str, CategoryRule]:
        for key in value:
            check_category(key)
        return value

    def rule(self, category: str) -> CategoryRule:
        """The rule in force for `category`."""
        return self.categories.get(category) or DEFAULT_RULES[self.default_action]

    @property
    def wants_spans(self) -> bool:
        """Whether any rule redacts (so the moderation call must return spans)."""
        return self.default_action == "redact" or any(r.action == "redact" for r in self.categories.values())


class GatewayPolicy(_Strict):
    """A named policy: moderation model, input and output rules, and the refusal."""

    description: str = ""
    moderation_model: str | None = Field(None, description="Moderation model; default: the service's.")
    input: StageRules = Field(default_factory=StageRules)
    output: StageRules = Field(default_factory=StageRules)
    input_scope: Literal["last_turn", "all"] = Field(
        "last_turn", description="Moderate the messages after the last assistant turn, or all of them."
    )
    refusal: str = Field(DEFAULT_REFUSAL, description="The answer sent in place of blocked content.")


class StreamingSettings(_Strict):
    """How streamed output is cut into windows that are moderated before release."""

    min_window_chars: int = Field(40, ge=1, description="Release at a sentence end once this many are held.")
    max_window_chars: int = Field(160, ge=8, description="Release at a word boundary at the latest here.")
    overlap_chars: int = Field(160, ge=0, description="Released text moderated again with the next window.")

    @model_validator(mode="after")
    def _order(self) -> StreamingSettings:
        if self.min_window_chars > self.max_window_chars:
            raise ValueError("min_window_chars must not exceed max_window_chars")
        return self


class RateLimit(_Strict):
    """Per-key limits; None means unlimited."""

    requests_per_minute: int | None = Field(None, ge=1, description="Requests in any 60 s window.")
    token_quota: int | None = Field(None, ge=1, description="Prompt + completion tokens per period.")
    quota_period_s: int = Field(86_400, ge=1, description="Length of a token-quota period in seconds.")


class GatewayLimits(_Strict):
    """Rate limits (default and per key id) and the upstream timeout."""

    default: RateLimit = Field(default_factory=RateLimit)
    keys: dict[str, RateLimit] = Field(default_factory=dict, description="Overrides by API key id.")
    upstream_timeout_s: float = Field(120.0, gt=0, description="Seconds an upstream may take to answer.")
    max_messages: int = Field(2048, ge=1, description="Messages per request.")

    def for_key(self, key_id: str) -> RateLimit:
        """The limit in force for `key_id`."""
        return self.keys.get(key_id, self.default)


class GatewaySettings(_Strict):
    """Policies, their assignment to keys and roles, streaming windows, limits."""

    default_policy: str = "default"
    policies: dict[str, GatewayPolicy] = Field(default_factory=lambda: {"default": GatewayPolicy()})
    key_policies: dict[str, str] = Field(default_factory=dict, description="API key id → policy name.")
    role_policies: dict[str, str] = Field(default_factory=dict, description="Role → policy name.")
    streaming: StreamingSettings = Field(default_factory=StreamingSettings)
    limits: GatewayLimits = Field(default_factory=GatewayLimits)
    record_usage: bool = Field(True, description="Write a usage event (no content) per request.")

    @model_validator(mode="after")
    def _references_exist(self) -> GatewaySettings:
        self.policies.setdefault("default", GatewayPolicy())
        names = [self.default_policy, *self.key_policies.values(), *self.role_policies.values()]
        for name in names:
            if name not in self.policies:
                raise ValueError(f"policy {name!r} is used but not defined; defined: {sorted(self.policies)}")
        return self

    def policy_for(self, key_id: str, role: str) -> str:
        """The policy name for a caller: by key id, else by role, else the default."""
        return self.key_policies.get(key_id) or self.role_policies.get(role) or self.default_policy
