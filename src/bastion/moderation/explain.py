"""Word-level explanations: which words of a flagged window or sentence drove a category's score.

A model backend reports the window or sentence that gave each category its score. For `explain=true`
that span is narrowed by occlusion: the span is scored alone, then once without each of its words (all
in one batch), and the words whose removal lowers the category's score most are the explanation (every
word whose drop is at least `share` of the largest drop). When no single word matters (the evidence is
spread over the span, or repeated) there is no word-level answer, and the caller keeps the span whole
unless another backend points at words.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

WORD = re.compile(r"\w+(?:['’]\w+)*")
"""A word: letters and digits, with inner apostrophes ("don't"); punctuation is never part of a span."""

MAX_WORDS = 64
"""Spans with more words get no word-level answer (one occlusion batch stays small)."""

Span = tuple[int, int]


def word_spans(text: str, start: int = 0, end: int | None = None) -> list[Span]:
    """The (start, end) character offsets of the words of `text[start:end]`, in `text`'s coordinates."""
    end = len(text) if end is None else end
    return [(m.start() + start, m.end() + start) for m in WORD.finditer(text[start:end])]


def without(text: str, span: Span, removed: Sequence[Span]) -> str:
    """`text[span]` with the `removed` word spans cut out and white space collapsed."""
    parts: list[str] = []
    position = span[0]
    for start, end in sorted(removed):
        parts.append(text[position:start])
        position = end
    parts.append(text[position : span[1]])
    return " ".join("".join(parts).split())


def join_spans(spans: Sequence[Span], text: str | None = None) -> list[Span]:
    """Sorted spans, overlapping ones joined into one; given the `text`, also those separated only by white
    space (adjacent words become one span)."""
    joined: list[Span] = []
    for start, end in sorted(set(spans)):
        if joined and (
            start < joined[-1][1] or (text is not None and not text[joined[-1][1] : start].strip())
        ):
            joined[-1] = (joined[-1][0], max(end, joined[-1][1]))
        else:
            joined.append((start, end))
    return joined


@dataclass
class Occlusion:
    """One span to narrow: its words, and the texts to score for it (the span alone, then once without each
    of its words; none when there is nothing to score)."""

    text: str
    span: Span
    columns: Sequence[int]
    words: list[Span]
    variants: list[str]

    @classmethod
    def of(cls, text: str, span: Span, columns: Sequence[int], max_words: int = MAX_WORDS) -> Occlusion:
        """The job for `text[span]` and the category columns it explains."""
        words = word_spans(text, *span)
        scored = 1 < len(words) <= max_words
        variants = [without(text, span, []), *(without(text, span, [w]) for w in words)] if scored else []
        return cls(text, span, columns, words, variants)

    def answer(self, rows: np.ndarray | None, share: float, min_drop: float) -> dict[int, list[Span]]:
        """Per column, the words that drove it, given the scores of `variants` (None when there are none)."""
        if rows is None:  # one word answers for itself; none, or too many to score, give no answer
            return {c: list(self.words) if len(self.words) == 1 else [] for c in self.columns}
        out: dict[int, list[Span]] = {}
        for column in self.columns:
            drops = rows[0, column] - rows[1:, column]
            top = float(drops.max())
            if top < min_drop:
                out[column] = []
                continue
            cut = max(min_drop, share * top)
            kept = [w for w, d in zip(self.words, drops, strict=True) if d >= cut]
            out[column] = join_spans(kept, self.text)
        return out


MAX_VARIANTS = 2048
"""Variants scored per call of `occlusion_many`'s score function (a large request is explained in parts)."""


def occlusion_many(
    score: Callable[[list[str]], np.ndarray],
    jobs: Sequence[Occlusion],
    *,
    share: float = 0.5,
    min_drop: float = 0.02,
    max_variants: int = MAX_VARIANTS,
) -> list[dict[int, list[Span]]]:
    """Each job's answer (`Occlusion.answer`), the variants of consecutive jobs scored together in calls of
    `score` of at most `max_variants` texts (or one job's, if more)."""
    out: list[dict[int, list[Span]]] = []
    start = 0
    while start < len(jobs):
        end, count = start, 0
        while end < len(jobs) and (end == start or count + len(jobs[end].variants) <= max_variants):
            count += len(jobs[end].variants)
            end += 1
        texts = [variant for job in jobs[start:end] for variant in job.variants]
        rows = np.asarray(score(texts)) if texts else None
        at = 0
        for job in jobs[start:end]:
            n = len(job.variants)
            out.append(job.answer(rows[at : at + n] if rows is not None and n else None, share, min_drop))
            at += n
        start = end
    return out


def occlusion_spans(
    score: Callable[[list[str]], np.ndarray],
    text: str,
    span: Span,
    columns: Sequence[int],
    *,
    share: float = 0.5,
    min_drop: float = 0.02,
    max_words: int = MAX_WORDS,
) -> dict[int, list[Span]]:
    """For each column (a category's index in `score`'s rows), the words of `text[span]` that drove it.

    `score(texts)` returns one row of category probabilities per text. A span of one word is its own
    answer; a column whose largest drop is under `min_drop`, and every column of a span of more than
    `max_words` words or none, gets `[]` (no word stands out).
    """
    job = Occlusion.of(text, span, columns, max_words)
    return occlusion_many(score, [job], share=share, min_drop=min_drop)[0]
