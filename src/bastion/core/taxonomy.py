"""The 13 harm categories of OpenAI's omni-moderation model, with definitions and input types.

Every capability names categories by these slash-separated keys; nothing else invents its own list.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Category:
    """One harm category: its key, what it covers, and which input types it applies to."""

    key: str
    definition: str
    input_types: tuple[str, ...] = ("text",)

    @property
    def parent(self) -> str | None:
        """The broader category (`hate` for `hate/threatening`), or None for a top-level one."""
        return self.key.split("/", 1)[0] if "/" in self.key else None


CATEGORIES: tuple[Category, ...] = (
    Category(
        "harassment",
        "Content that expresses, incites, or promotes harassing language towards any target.",
    ),
    Category(
        "harassment/threatening",
        "Harassment content that also includes violence or serious harm towards any target.",
    ),
    Category(
        "hate",
        "Content that expresses, incites, or promotes hate based on race, gender, ethnicity, religion, "
        "nationality, sexual orientation, disability status, or caste.",
    ),
    Category(
        "hate/threatening",
        "Hateful content that also includes violence or serious harm towards the targeted group.",
    ),
    Category(
        "illicit",
        "Content that gives advice or instruction on how to commit illicit acts "
        "(for example, how to shoplift).",
    ),
    Category(
        "illicit/violent",
        "Illicit content that also includes references to violence or procuring a weapon.",
    ),
    Category(
        "self-harm",
        "Content that promotes, encourages, or depicts acts of self-harm, such as suicide, cutting, "
        "and eating disorders.",
        ("text", "image"),
    ),
    Category(
        "self-harm/intent",
        "Content where the speaker expresses that they are engaging or intend to engage in acts of "
        "self-harm.",
        ("text", "image"),
    ),
    Category(
        "self-harm/instructions",
        "Content that encourages performing acts of self-harm, or that gives instructions or advice on "
        "how to commit such acts.",
        ("text", "image"),
    ),
    Category(
        "sexual",
        "Content meant to arouse sexual excitement, or that promotes sexual services "
        "(excluding sex education and wellness).",
        ("text", "image"),
    ),
    Category("sexual/minors", "Sexual content that includes an individual who is under 18 years old."),
    Category(
        "violence",
        "Content that depicts death, violence, or physical injury.",
        ("text", "image"),
    ),
    Category(
        "violence/graphic",
        "Content that depicts death, violence, or physical injury in graphic detail.",
        ("text", "image"),
    ),
)

CATEGORY_KEYS: tuple[str, ...] = tuple(c.key for c in CATEGORIES)
BY_KEY: dict[str, Category] = {c.key: c for c in CATEGORIES}
SUBCATEGORIES: tuple[tuple[str, str], ...] = tuple(
    (c.key, c.parent) for c in CATEGORIES if c.parent is not None
)
"""(subcategory, parent) pairs, in taxonomy order."""


def zero_scores() -> dict[str, float]:
    """A score map with every category at 0.0, in taxonomy order."""
    return dict.fromkeys(CATEGORY_KEYS, 0.0)


def check_category(key: str) -> str:
    """Return `key` if it names a category, else raise `UnknownCategory`."""
    from bastion.core.errors import UnknownCategory

    if key not in BY_KEY:
        raise UnknownCategory(f"unknown category {key!r}; expected one of: {', '.join(CATEGORY_KEYS)}")
    return key
