"""Explanations: do `explain=true` spans point at the words people marked as toxic?

    python benchmarks/explanation_quality.py              # about a minute on 2 cores
    python benchmarks/explanation_quality.py --json out.json

Toxic Spans (`../shared/data/toxic-spans`) holds Civil Comments posts in which crowd raters highlighted
the toxic words. A character is toxic when at least half of a post's raters marked it (posts with more than
ten raters are screening items and are skipped). The posts scored here were never trained on: not among
the rows the shipped heads were trained on (`select_rows`, seed 0), nor among the texts of the encoder's
distillation and fine-tuning passes (`ENCODER_PASSES`: each pass's seed and number of texts, drawn from
today's data; the passes ran on the data of their day, so this is close, not exact). The occlusion settings
(`explain.occlusion_spans`: share 0.5, word boundaries) were chosen on the first 800 posts, in a seeded
order, of those the encoder had not seen before its last pass (`--tuning` scores them); the posts after
them that no pass saw are scored, up to `--posts`.

The metric is SemEval-2021 Task 5's: per post, the F1 of the predicted against the gold character offsets
(1 when both are empty, 0 when only one is), averaged over posts; printed over all posts and over the posts
with gold spans. A system's prediction is the union of the spans of every category the default model
flags, for the same texts and verdicts in one run:

- `nothing`: no spans (scores 1 on every post without gold spans, 0 elsewhere);
- `whole text`: the whole post when anything is flagged;
- `windows and sentences`: the spans the backends' scores came with (`word_spans=False`, what the gateway
  redacts, and `explain=true` before word-level explanations);
- `words` (shipped): `explain=true`, each flagged category narrowed to the words that drove it
  (occlusion for the embedded model, offensive words for the `profanity` backend, list matches as they are).

Also printed: milliseconds per post (p50) of a call with `word_spans=False`, and what word-level
explanations add to it (the second call finds the scores in the model's cache; the rest is occlusion).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

TUNING_POSTS = 800
MAX_RATERS = 10
ENCODER_PASSES = ((0, 16000), (1, 16000), (3, 16000), (4, 16000), (10, 100000))
"""(seed, --max-texts) of the shipped encoder's distillation and fine-tuning passes (`distill.json`)."""


def gold_spans(folder: Path) -> list[tuple[str, set[int]]]:
    """(post, the character offsets at least half of its raters marked) for every rated post."""

    def rows(name: str) -> list[dict[str, str]]:
        with (folder / name).open(encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f))

    texts = {r["comment_id"]: r["comment_text"] for r in rows("comments.csv")}
    post_of: dict[str, str] = {}
    raters: dict[str, set[str]] = defaultdict(set)
    for r in rows("annotations.csv"):
        post_of[r["annotation"]] = r["comment_id"]
        raters[r["comment_id"]].add(r["annotation"])
    marked: dict[str, dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
    for r in rows("spans.csv"):
        post = post_of.get(r["annotation"])
        if post is not None:
            for i in range(int(r["start"]), int(r["end"])):
                marked[post][i].add(r["annotation"])
    out = []
    for post, text in texts.items():
        n = len(raters.get(post, ()))
        if 0 < n <= MAX_RATERS:
            out.append((text, {i for i, who in marked[post].items() if len(who) / n >= 0.5}))
    return out


def trained_texts(settings: Any, passes: tuple[tuple[int, int], ...]) -> set[str]:
    """Toxic Spans texts the shipped heads or (approximately) the encoder's `passes` trained on."""
    from bastion.moderation.datasets import load_all
    from bastion.moderation.distill import pass_texts
    from bastion.moderation.train import TrainSpec, select_rows

    spec = TrainSpec()
    rows = load_all(settings.data_dir).rows
    used = {r.text for r in select_rows(rows, spec, random.Random(0)) if r.source == "toxic-spans"}
    spans_rows = [r for r in rows if r.source == "toxic-spans"]
    for seed, limit in passes:
        drawn = pass_texts(rows, spec, seed, limit)
        used |= {r.text for r in spans_rows if r.text[: spec.max_train_chars] in drawn}
    return used


def f1(predicted: set[int], gold: set[int]) -> float:
    """SemEval-2021 Task 5's per-post F1 of character offsets."""
    if not predicted and not gold:
        return 1.0
    hits = len(predicted & gold)
    if hits == 0:
        return 0.0
    precision, recall = hits / len(predicted), hits / len(gold)
    return 2 * precision * recall / (precision + recall)


def characters(result: Any) -> set[int]:
    """Every character offset inside a span of the result's explanations."""
    out: set[int] = set()
    for spans in (result.explanations or {}).values():
        for span in spans:
            out.update(range(span.start, span.end))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=1000, help="held-out posts to score")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--tuning",
        action="store_true",
        help=f"score the first {TUNING_POSTS} posts, kept for choosing settings",
    )
    args = parser.parse_args()

    if __package__ in (None, ""):
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bastion.core.settings import load_settings
    from bastion.moderation.service import ModerationService
    from benchmarks.machine import cpu_line

    settings = load_settings()
    before = trained_texts(settings, ENCODER_PASSES[:-1])
    seen = before | trained_texts(settings, ENCODER_PASSES[-1:])
    posts = [
        (text, gold)
        for text, gold in gold_spans(settings.data_dir / "toxic-spans")
        if text.strip() not in before
    ]
    random.Random(0).shuffle(posts)
    posts = posts[:TUNING_POSTS] if args.tuning else posts[TUNING_POSTS:]
    posts = [(text, gold) for text, gold in posts if text.strip() not in seen][: args.posts]
    service = ModerationService(settings)
    service.moderate(["warm up"], explain=True)
    scores: dict[str, list[float]] = defaultdict(list)
    timings: dict[str, list[float]] = defaultdict(list)
    for text, gold in posts:
        started = time.perf_counter()
        _, [coarse] = service.moderate([text], explain=True, word_spans=False)
        middle = time.perf_counter()
        _, [words] = service.moderate([text], explain=True)
        timings["windows and sentences"].append((middle - started) * 1000)
        timings["words (shipped)"].append((time.perf_counter() - middle) * 1000)
        flagged = bool(words.flagged_categories)
        predicted = {
            "nothing": set(),
            "whole text": set(range(len(text))) if flagged else set(),
            "windows and sentences": characters(coarse),
            "words (shipped)": characters(words),
        }
        for name, chars in predicted.items():
            scores[name].append(f1(chars, gold))
            if gold:
                scores[name + " | gold"].append(f1(chars, gold))
    with_gold = sum(1 for _, gold in posts if gold)
    print(cpu_line())
    print(
        f"{len(posts)} held-out Toxic Spans posts ({with_gold} with gold spans); the default model's verdicts"
    )
    print(f"{'system':26s}{'F1, all':>10s}{'F1, gold':>10s}{'vs before':>11s}")
    before = statistics.fmean(scores["windows and sentences | gold"])
    figures: dict[str, Any] = {"posts": len(posts), "with_gold": with_gold, "systems": {}}
    for name in ("nothing", "whole text", "windows and sentences", "words (shipped)"):
        everything = statistics.fmean(scores[name])
        gold_only = statistics.fmean(scores[name + " | gold"]) if scores[name + " | gold"] else 0.0
        ratio = f"{gold_only / before:.2f}x" if before else "-"
        print(f"{name:26s}{everything:>10.3f}{gold_only:>10.3f}{ratio:>11s}")
        figures["systems"][name] = {"f1_all": everything, "f1_gold": gold_only}
    call = statistics.median(timings["windows and sentences"])
    extra = statistics.median(timings["words (shipped)"])
    print(f"time per post, p50: {call:.2f} ms for a call; word-level explanations add {extra:.2f} ms")
    figures["ms_p50"] = {"call": call, "word_level_extra": extra}
    service.close()
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
