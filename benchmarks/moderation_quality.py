"""Moderation quality: the shipped model beside the previous shipped heads and `alt-profanity-check`.

    python benchmarks/moderation_quality.py                 # a few minutes on 2 cores (cached embeddings)
    python benchmarks/moderation_quality.py --json out.json

Measured in one run, on the same texts, for each system:

- held-out quality on the *test sources* (`TrainSpec.test_sources`: whole data sets and RTP-LX locales
  that the shipped heads never trained on, calibrated on or tuned thresholds on): any-harm AUPRC and
  AUPRC per category. Texts are cut to `max_train_chars` and scored as served (max over windows and
  sentences). The previous shipped model (`benchmarks/baselines/embedded_v6`: the encoder after one
  fine-tuning pass on all training texts instead of five, and its heads, held out the same way) runs on
  its own encoder; a second line compares, on the five whole test data sets only, the first shipped recipe
  retrained without them (`baselines/embedded_v1_recipe_heldout`); alt-profanity-check gives one any-harm
  score;
- XSTest (never trained or tuned on): share of the 250 safe prompts flagged and of the 200 unsafe
  prompts caught, each system at its own thresholds (alt-profanity-check at 0.5), texts served whole
  (max over 256-token windows);
- everyday text: the share of each all-benign test source (TruthfulQA questions, OpenAssistant messages)
  flagged by each system at its thresholds;
- the team-written hate-speech functional tests (`artifacts/functional_tests.jsonl`): accuracy per
  function (hateful when the hate score passes its threshold; profanity-check: probability ≥ 0.5).

"shipped" and "previous" are each served as the default model serves them: the embedded heads and the
`profanity` backend (alt-profanity-check's model, reported as harassment), combined as the service does: a
category's score is the max over backends, and a text is flagged for harassment when either passes its own
threshold. The any-harm AUPRC of the heads alone is printed beside it.

Ratios are shipped / other: above 1 means the shipped model scores higher (better for AUPRC, recall
and accuracy; worse for the safe-prompt flag rate).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bastion.core.settings import Settings, load_settings
from bastion.core.taxonomy import CATEGORY_KEYS
from bastion.moderation.datasets import load_all, load_xstest
from bastion.moderation.evaluate import evaluate, functional_report, load_functional_tests
from bastion.moderation.heads import HeadParams
from bastion.moderation.ngrams import NgramModel
from bastion.moderation.train import (
    TrainSpec,
    bundled_encoder,
    default_artifacts_dir,
    is_test_source,
    score_texts,
    select_rows,
    xstest_metrics,
)

BASELINES = Path(__file__).resolve().parent / "baselines"
BASELINE = BASELINES / "embedded_v6"
FAIR_BASELINE = BASELINES / "embedded_v1_recipe_heldout"
FAIR_SOURCES = ("convabuse", "fox-news", "mlma", "simplesafetytests", "harmbench")


def load_heads(folder: Path) -> tuple[HeadParams, dict[str, float]]:
    """Heads (linear or with a hidden layer) and thresholds from a heads.npz + card.json folder."""
    heads = HeadParams.load(folder / "heads.npz")
    card = json.loads((folder / "card.json").read_text(encoding="utf-8"))
    return heads, {k: float(card["thresholds"].get(k, 0.5)) for k in CATEGORY_KEYS}


class Embedder:
    """Embeddings per heads folder, from the encoder that folder's heads were trained on (one per model)."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self._encoders: dict[str, Any] = {}

    def encoder(self, folder: Path) -> Any:
        from bastion.moderation.encoder import Encoder, resolve_model_path

        path = resolve_model_path(bundled_encoder(folder))
        if str(path) not in self._encoders:
            self._encoders[str(path)] = Encoder(path)
        return self._encoders[str(path)]

    def scores(self, folder: Path, heads: HeadParams, texts: list[str]) -> np.ndarray:
        """Scores as served: max over each text's windows and sentences, blended with the folder's n-gram
        heads when it has some (`train.score_texts`)."""
        return score_texts(self.encoder(folder), heads, texts, NgramModel.in_folder(folder))


class WithProfanity:
    """The heads' scores combined with the `profanity` backend's, as the default model serves them."""

    def __init__(self, settings: Settings) -> None:
        from bastion.moderation.backends.profanity import ProfanityWeights, packaged_card

        card = packaged_card()
        self.weights = ProfanityWeights.load(settings.cache_dir("profanity"))
        self.column = CATEGORY_KEYS.index(card["category"])
        self.threshold = float(card["thresholds"]["default"])

    def __call__(self, heads_scores: np.ndarray, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(scores: the category's the max of both, for AUPRC; the same with the category forced to 1
        where the profanity backend flags it, so that the heads' thresholds give the served flags)."""
        p = self.weights.probabilities(texts)
        ranked, flagging = heads_scores.copy(), heads_scores.copy()
        ranked[:, self.column] = np.maximum(ranked[:, self.column], p)
        flagging[:, self.column] = np.where(p >= self.threshold, 1.0, flagging[:, self.column])
        return ranked, flagging


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}x"


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the comparison, print the tables, and return the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the numbers to this file")
    parser.add_argument("--seed", type=int, default=0, help="the seed the shipped heads were trained with")
    args = parser.parse_args(argv)

    from profanity_check import predict_prob

    settings = load_settings()
    spec = TrainSpec()
    folders = {"shipped": default_artifacts_dir(), "previous": BASELINE}
    systems = {name: load_heads(folder) for name, folder in folders.items()}
    embedder = Embedder(settings)

    rows = select_rows(load_all(settings.data_dir).rows, spec, random.Random(args.seed))
    test = [r for r in rows if is_test_source(r.source, spec)]
    texts = [r.text[: spec.max_train_chars] for r in test]
    served = {name: embedder.scores(folders[name], systems[name][0], texts) for name in folders}
    labels = [r.labels for r in test]
    held: dict[str, Any] = {}
    heads_only = {
        name: evaluate([dict(zip(CATEGORY_KEYS, s, strict=True)) for s in served[name]], labels, thr)
        for name, (_, thr) in systems.items()
    }
    with_profanity = WithProfanity(settings)
    flagging: dict[str, np.ndarray] = {}
    for name in folders:
        served[name], flagging[name] = with_profanity(served[name], texts)
    for name, (_, thr) in systems.items():
        held[name] = evaluate([dict(zip(CATEGORY_KEYS, s, strict=True)) for s in served[name]], labels, thr)
    prof = np.asarray(predict_prob(texts), dtype=np.float64)
    held["alt-profanity-check"] = evaluate(
        [dict.fromkeys(CATEGORY_KEYS, float(p)) for p in prof], labels, dict.fromkeys(CATEGORY_KEYS, 0.5)
    )

    xs_texts, xs_labels, _ = load_xstest(settings.data_dir)
    xs: dict[str, Any] = {}
    for name, (heads, thr) in systems.items():
        ranked, xs_flagging = with_profanity(embedder.scores(folders[name], heads, xs_texts), xs_texts)
        xs[name] = xstest_metrics(xs_flagging, xs_labels, thr)  # flag rates as served
        xs[name]["auprc"] = xstest_metrics(ranked, xs_labels, thr)["auprc"]
    xs_prof = np.asarray(predict_prob(xs_texts), dtype=np.float64)[:, None].repeat(len(CATEGORY_KEYS), 1)
    xs["alt-profanity-check"] = xstest_metrics(xs_prof, xs_labels, dict.fromkeys(CATEGORY_KEYS, 0.5))

    cases = load_functional_tests()
    fx: dict[str, Any] = {}
    for name, (heads, thr) in systems.items():
        scores = embedder.scores(folders[name], heads, [c["text"] for c in cases])
        fx[name] = functional_report(cases, [dict(zip(CATEGORY_KEYS, s, strict=True)) for s in scores], thr)
    fx_prof = predict_prob([c["text"] for c in cases])
    fx["alt-profanity-check"] = functional_report(cases, [{"hate": float(p)} for p in fx_prof], {"hate": 0.5})

    names = ["shipped", "previous", "alt-profanity-check"]
    print(f"held-out test sources: {len(test)} texts from {', '.join(spec.test_sources)}")
    print("  (previous = the last shipped model, held out the same way; alt-profanity-check: any-harm only)")
    print(f"{'category':26s}{'shipped':>9s}{'previous':>10s}{'profanity':>11s}{'vs prev':>9s}{'vs prof':>9s}")
    for key in [*CATEGORY_KEYS, "any"]:
        a, b = held["shipped"][key]["auprc"], held["previous"][key]["auprc"]
        c = held["alt-profanity-check"][key]["auprc"] if key == "any" else None
        print(f"{key:26s}{_f(a):>9s}{_f(b):>10s}{_f(c):>11s}{_ratio(a, b):>9s}{_ratio(a, c):>9s}")
    a, b = heads_only["shipped"]["any"]["auprc"], heads_only["previous"]["any"]["auprc"]
    print(f"{'any, heads alone':26s}{_f(a):>9s}{_f(b):>10s}{'':>11s}{_ratio(a, b):>9s}")
    fair_idx = [i for i, r in enumerate(test) if r.source in FAIR_SOURCES]
    fair_heads, fair_thr = load_heads(FAIR_BASELINE)
    fair: dict[str, Any] = {}
    fair_texts = [texts[i] for i in fair_idx]
    fair_scores = {
        "shipped": served["shipped"][fair_idx],
        "v1 recipe": embedder.scores(FAIR_BASELINE, fair_heads, fair_texts),
    }
    for name, (_, thr) in {"shipped": systems["shipped"], "v1 recipe": (fair_heads, fair_thr)}.items():
        scores = fair_scores[name]
        fair[name] = evaluate(
            [dict(zip(CATEGORY_KEYS, s, strict=True)) for s in scores], [labels[i] for i in fair_idx], thr
        )
    fair["alt-profanity-check"] = evaluate(
        [dict.fromkeys(CATEGORY_KEYS, float(prof[i])) for i in fair_idx],
        [labels[i] for i in fair_idx],
        dict.fromkeys(CATEGORY_KEYS, 0.5),
    )
    print(
        f"\nfair comparison on {len(fair_idx)} texts of {', '.join(FAIR_SOURCES)} "
        "(neither model trained on them)"
    )
    print(f"{'category':26s}{'shipped':>9s}{'v1 recipe':>11s}{'profanity':>11s}{'vs v1':>9s}{'vs prof':>9s}")
    for key in [*CATEGORY_KEYS, "any"]:
        a, b = fair["shipped"][key]["auprc"], fair["v1 recipe"][key]["auprc"]
        c = fair["alt-profanity-check"][key]["auprc"] if key == "any" else None
        print(f"{key:26s}{_f(a):>9s}{_f(b):>11s}{_f(c):>11s}{_ratio(a, b):>9s}{_ratio(a, c):>9s}")
    print("\nXSTest (any-harm): AUPRC, safe prompts flagged (lower is better), unsafe prompts caught")
    for name in names:
        m = xs[name]
        print(
            f"  {name:22s} AUPRC {_f(m['auprc'])}  safe flagged {_f(m['safe_flagged_rate'])}  "
            f"unsafe caught {_f(m['unsafe_recall'])}"
        )
    s, p = xs["shipped"], xs["previous"]
    print(
        f"  ratios shipped/previous: AUPRC {_ratio(s['auprc'], p['auprc'])}, safe flagged "
        f"{_ratio(s['safe_flagged_rate'], p['safe_flagged_rate'])}, unsafe caught "
        f"{_ratio(s['unsafe_recall'], p['unsafe_recall'])}"
    )
    benign_sources = sorted({r.source for r in test if r.source.startswith("benign:")})
    everyday: dict[str, dict[str, float]] = {}
    sizes: dict[str, int] = {}
    for source in benign_sources:
        idx = [i for i, r in enumerate(test) if r.source == source]
        sizes[source] = len(idx)
        source_labels = [labels[i] for i in idx]
        # All rows benign: the any-harm false-positive rate is the share flagged.
        everyday[source] = {
            name: evaluate(
                [dict(zip(CATEGORY_KEYS, s, strict=True)) for s in flagging[name][idx]], source_labels, thr
            )["any"]["fpr"]
            for name, (_, thr) in systems.items()
        }
        everyday[source]["alt-profanity-check"] = float((prof[idx] >= 0.5).mean())
    print("\neveryday text (benign test sources): share flagged at each system's thresholds (lower: better)")
    print(f"  {'source':22s}{'n':>6s}{'shipped':>9s}{'previous':>10s}{'profanity':>11s}{'vs prev':>9s}")
    for source, rates in everyday.items():
        row = [rates[name] for name in names]
        print(
            f"  {source:22s}{sizes[source]:>6d}{row[0]:>9.3f}{row[1]:>10.3f}{row[2]:>11.3f}"
            f"{_ratio(row[0], row[1]):>9s}"
        )
    print("\nhate-speech functional tests (team-written): accuracy per function")
    print(f"  {'function (expected)':46s}{'n':>4s}{'shipped':>9s}{'previous':>10s}{'profanity':>11s}")
    for fn, m in fx["shipped"]["by_function"].items():
        row = [fx[n]["by_function"][fn]["accuracy"] for n in names]
        print(f"  {fn:46s}{m['n']:>4d}{row[0]:>9.2f}{row[1]:>10.2f}{row[2]:>11.2f}")
    overall = [fx[n]["overall"]["accuracy"] for n in names]
    print(
        f"  {'overall':46s}{fx['shipped']['overall']['n']:>4d}"
        f"{overall[0]:>9.2f}{overall[1]:>10.2f}{overall[2]:>11.2f}"
    )
    result = {
        "test_sources": held,
        "test_sources_heads_alone": heads_only,
        "fair_test_sources": fair,
        "xstest": xs,
        "everyday_flagged": everyday,
        "functional_tests": fx,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
