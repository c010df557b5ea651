"""Deterministic synthetic inputs for speed benchmarks (not for quality: they carry no labels).

Sentences are assembled from small word lists with a seeded `random.Random`, so every run and every
machine scores the same texts. A minority of sentences are rude, hostile or violent so that both the
model and the baseline exercise their flagged paths too; none comes from the project's data sets.
"""

from __future__ import annotations

import random

SUBJECTS = [
    "my neighbour",
    "the new manager",
    "our team",
    "a stranger on the bus",
    "my sister",
    "the landlord",
    "that guy from accounting",
    "the whole class",
    "your cousin",
    "the delivery driver",
    "the mayor",
    "an old friend",
    "the support agent",
    "my roommate",
    "the coach",
    "a reviewer",
    "the kids next door",
]
VERBS = [
    "talked about",
    "complained about",
    "posted a picture of",
    "asked me about",
    "wrote a long email about",
    "laughed at",
    "forgot",
    "fixed",
    "painted",
    "cancelled",
    "recommended",
    "returned",
    "argued about",
    "reviewed",
    "ordered",
    "planned",
    "ignored",
    "shared",
]
OBJECTS = [
    "the garden fence",
    "a cheap laptop",
    "the quarterly report",
    "the weekend trip",
    "a broken bicycle",
    "the vegetable soup",
    "the football match",
    "a pair of boots",
    "the tax forms",
    "the birthday party",
    "the parking rules",
    "a jazz record",
    "the train schedule",
    "a wooden table",
    "the science homework",
    "the hiking route",
    "a bowl of noodles",
    "the kitchen sink",
]
MANNERS = [
    "yesterday",
    "last night",
    "on Monday",
    "again",
    "without asking",
    "in the rain",
    "for an hour",
    "at the office",
    "before lunch",
    "after the meeting",
    "politely",
    "very loudly",
    "online",
]
QUESTIONS = [
    "What's the best way to {v} {o}?",
    "Does anyone know when {s} {v} {o}?",
    "Can you help me with {o}?",
    "Why did {s} {v} {o} {m}?",
    "How long does it take to fix {o}?",
]
HOSTILE = [
    "{s} is a complete idiot and everyone hates them.",
    "Shut up, {s}, nobody cares about {o}.",
    "I will hurt {s} if they touch {o} again.",
    "{s} deserves to be punched in the face.",
    "What a stupid damn waste of time {o} was.",
    "I am going to kill {s} {m}, I swear.",
    "{s} is worthless trash and should disappear.",
]
FILLER = [
    "It was fine overall.",
    "Nobody expected that.",
    "We will see how it goes.",
    "I think it went well.",
    "That is all I wanted to say.",
    "Honestly it could have been worse.",
    "Let me know what you think.",
]


def _fill(template: str, rng: random.Random) -> str:
    return template.format(
        s=rng.choice(SUBJECTS), v=rng.choice(VERBS), o=rng.choice(OBJECTS), m=rng.choice(MANNERS)
    )


def sentence(rng: random.Random, hostile_rate: float = 0.15) -> str:
    """One sentence: usually a plain statement or question, sometimes a hostile one."""
    roll = rng.random()
    if roll < hostile_rate:
        text = _fill(rng.choice(HOSTILE), rng)
    elif roll < hostile_rate + 0.2:
        text = _fill(rng.choice(QUESTIONS), rng)
    elif roll < hostile_rate + 0.3:
        text = rng.choice(FILLER)
    else:
        text = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(MANNERS)}."
    return text[0].upper() + text[1:]


def text_of_words(rng: random.Random, words: int) -> str:
    """Whole sentences until the text has at least `words` words."""
    parts: list[str] = []
    count = 0
    while count < words:
        s = sentence(rng)
        parts.append(s)
        count += len(s.split())
    return " ".join(parts)


def generate(n: int, words: int, seed: int = 0) -> list[str]:
    """`n` varied texts of about `words` words each, the same for the same arguments."""
    rng = random.Random(f"bastion-bench-{seed}-{words}")
    return [text_of_words(rng, words) for _ in range(n)]


SHORT_WORDS = 20
LONG_WORDS = 200


def short_texts(n: int, seed: int = 0) -> list[str]:
    """About 20 words each (a chat message)."""
    return generate(n, SHORT_WORDS, seed)


def long_texts(n: int, seed: int = 0) -> list[str]:
    """About 200 words each (a long post or a model answer)."""
    return generate(n, LONG_WORDS, seed)
