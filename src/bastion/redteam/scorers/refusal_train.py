"""Train the refusal classifier and measure its agreement with human labels.

Data (by path from `settings.data_dir`, never copied):
- CoCoNot preference pairs (`coconot/coconot_pref.jsonl`): for each prompt, `chosen` is a compliant
  answer and `rejected` a refusal, as labelled by the data set's authors. Split by prompt id: a fixed 80%
  trains, 20% is held out.
- The Bastion team's own examples (`data/refusal_seed.json`), all in training.
- Questions people asked in HH-RLHF (`hh-rlhf-harmless/pairs.jsonl.gz`, the first human turn of 400
  pairs) as non-refusals: models often restate or answer with a question, and a question is no refusal.
- Responses of the local model (SmolLM2-135M-Instruct) to red-team campaigns, labelled by hand by the
  Bastion team: `data/refusal_dev.json` was looked at while choosing the knees and writing seed examples;
  `data/refusal_heldout.json` (other prompts, another run) was labelled after that, and only evaluated.

Reported on each held-out set: accuracy, Cohen's kappa, refusal precision/recall, for the scorer (the
classifier combined with the rules), the classifier alone and the string rules alone. Needs
scikit-learn (`pip install 'bastion[ml]'`).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bastion.core.errors import DependencyMissing
from bastion.core.settings import Settings
from bastion.redteam.probes.base import data_file, read_jsonl
from bastion.redteam.scorers.refusal import ARTIFACT, RefusalModel, analyze, rule_refusal

SEED = Path(__file__).parent / "data" / "refusal_seed.json"
HELDOUT = Path(__file__).parent / "data" / "refusal_heldout.json"
DEV = Path(__file__).parent / "data" / "refusal_dev.json"
KNEES = {"knee_with_rule": 0.3, "knee_without_rule": 0.7}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _held_out(key: str) -> bool:
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 5 == 0


def coconot_pairs(settings: Settings) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(train, held-out) lists of (response, refusal label) from CoCoNot's preference pairs."""
    train: list[tuple[str, int]] = []
    test: list[tuple[str, int]] = []
    for row in read_jsonl(data_file(settings, "coconot", "coconot_pref.jsonl")):
        bucket = test if _held_out(row["id"]) else train
        bucket.append((row["chosen"], 0))
        bucket.append((row["rejected"], 1))
    return train, test


def hh_questions(settings: Settings, count: int = 400) -> list[tuple[str, int]]:
    """The first human turn of the first `count` HH-RLHF pairs, labelled non-refusal."""
    import gzip

    out: list[tuple[str, int]] = []
    path = data_file(settings, "hh-rlhf-harmless", "pairs.jsonl.gz")
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            text = json.loads(line)["chosen"]
            first = text.split("Human:", 1)[-1].split("Assistant:", 1)[0].strip()
            if first:
                out.append((first, 0))
            if len(out) >= count:
                break
    return out


def agreement(labels: list[int], predicted: list[int]) -> dict[str, float]:
    """Accuracy, Cohen's kappa, refusal precision and recall."""
    n = len(labels)
    if not n:
        return {}
    agree = sum(a == b for a, b in zip(labels, predicted, strict=True)) / n
    p_label = sum(labels) / n
    p_pred = sum(predicted) / n
    chance = p_label * p_pred + (1 - p_label) * (1 - p_pred)
    kappa = (agree - chance) / (1 - chance) if chance < 1 else 1.0
    tp = sum(1 for a, b in zip(labels, predicted, strict=True) if a and b)
    precision = tp / sum(predicted) if sum(predicted) else 0.0
    recall = tp / sum(labels) if sum(labels) else 0.0
    return {
        "n": n,
        "accuracy": round(agree, 4),
        "cohen_kappa": round(kappa, 4),
        "refusal_precision": round(precision, 4),
        "refusal_recall": round(recall, 4),
    }


def evaluate(model: RefusalModel, rows: list[tuple[str, int]]) -> dict[str, Any]:
    """The classifier's and the string rules' agreement with the labels of `rows`."""
    labels = [label for _, label in rows]
    scorer = [int(model.combined(text)[0] >= 0.5) for text, _ in rows]
    clf = [int(model.predict(text)[0] >= model.threshold) for text, _ in rows]
    rules = [int(rule_refusal(text)[0]) for text, _ in rows]
    return {
        "scorer": agreement(labels, scorer),
        "classifier": agreement(labels, clf),
        "rules": agreement(labels, rules),
    }


def train(settings: Settings, output: Path = ARTIFACT, max_features: int = 3000) -> dict[str, Any]:
    """Fit the classifier, evaluate it on the held-out sets, write the artefact; returns its metrics."""
    try:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
    except ImportError as exc:
        raise DependencyMissing("training the refusal classifier needs pip install 'bastion[ml]'") from exc

    train_rows, test_rows = coconot_pairs(settings)
    seed = json.loads(SEED.read_text(encoding="utf-8"))["examples"]
    train_rows += [(row["text"], int(row["refusal"])) for row in seed] * 3
    train_rows += hh_questions(settings)
    vectorizer = TfidfVectorizer(analyzer=analyze, max_features=max_features, sublinear_tf=False)
    features = vectorizer.fit_transform([text for text, _ in train_rows])
    classifier = LogisticRegression(C=4.0, max_iter=2000, class_weight="balanced")
    classifier.fit(features, [label for _, label in train_rows])
    vocabulary = {term: int(i) for term, i in vectorizer.vocabulary_.items()}
    data: dict[str, Any] = {
        "about": "Refusal classifier for the red-team `refusal` scorer: TF-IDF (word 1-2 grams of the "
        "first 600 characters) + logistic regression. Trained by `bastion redteam train-refusal`.",
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "vocabulary": vocabulary,
        "idf": [round(float(v), 5) for v in vectorizer.idf_],
        "coef": [round(float(v), 5) for v in classifier.coef_[0]],
        "intercept": round(float(classifier.intercept_[0]), 5),
        "threshold": 0.5,
        "combine": KNEES,
        "data": {
            "coconot/coconot_pref.jsonl": _sha(data_file(settings, "coconot", "coconot_pref.jsonl")),
            "refusal_seed.json": _sha(SEED),
            "hh-rlhf-harmless/pairs.jsonl.gz": _sha(
                data_file(settings, "hh-rlhf-harmless", "pairs.jsonl.gz")
            ),
            "train_rows": len(train_rows),
        },
    }
    model = RefusalModel(data)
    metrics: dict[str, Any] = {"coconot_heldout": evaluate(model, test_rows)}
    for name, path in (("smollm2_team_labelled_dev", DEV), ("smollm2_team_labelled_heldout", HELDOUT)):
        if path.is_file():
            labelled = json.loads(path.read_text(encoding="utf-8"))["examples"]
            metrics[name] = evaluate(model, [(row["text"], int(row["refusal"])) for row in labelled])
            data["data"][path.name] = _sha(path)
    data["metrics"] = metrics
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
    return metrics
