"""The `profanity` backend: alt-profanity-check's model read into arrays, scored without the package."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from bastion.core.errors import ConfigError, DependencyMissing
from bastion.core.settings import BackendSpec, load_settings
from bastion.core.taxonomy import CATEGORY_KEYS
from bastion.moderation.backends import profanity
from bastion.moderation.backends.base import create_backend
from bastion.moderation.backends.profanity import ProfanityWeights

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
ODD = [
    "",
    "   ",
    "!!!",
    "a",
    "12 34",
    "ÀÉÎ Straße idiot",
    "héllo wörld 😀 shit",
    "You ARE an IDIOT!!",
    "x" * 5000,
]


def sample_texts() -> list[str]:
    with (DATA / "wiki-talk-context-toxicity" / "gc.csv").open(encoding="utf-8") as f:
        texts = [row["text"] for row in csv.DictReader(f)]
    return texts[:1500] + ODD


def test_scores_equal_the_packages_own() -> None:
    from profanity_check import predict_prob

    texts = sample_texts()
    ours = ProfanityWeights.extract().probabilities(texts)
    np.testing.assert_allclose(ours, predict_prob(texts), rtol=0, atol=1e-9)
    assert ours.min() < 0.05 and ours.max() > 0.95  # the sample holds both kinds


def test_weights_are_cached_and_read_back_without_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = ProfanityWeights.load(tmp_path)
    [cached] = tmp_path.glob("weights-*.npz")

    def no_extraction() -> ProfanityWeights:
        raise AssertionError("extracted again")

    monkeypatch.setattr(ProfanityWeights, "extract", staticmethod(no_extraction))
    again = ProfanityWeights.load(tmp_path)
    assert again.vocabulary == first.vocabulary and cached.is_file()
    np.testing.assert_array_equal(again.probabilities(ODD), first.probabilities(ODD))


def test_backend_reports_one_category_with_the_packaged_thresholds(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path)
    backend = create_backend(BackendSpec(plugin="profanity"), settings)
    insult, weather = backend.score(["You are a worthless fucking idiot", "Will it rain in Paris tomorrow?"])
    assert set(insult.scores) == {"harassment"} and insult.scores["harassment"] > 0.9
    assert weather.scores["harassment"] < 0.2
    card = profanity.packaged_card()
    assert backend.default_thresholds["harassment"] == card["thresholds"]["default"]
    assert backend.threshold_sets["strict"]["harassment"] == card["thresholds"]["strict"]
    assert all(backend.default_thresholds[k] == 1.0 for k in CATEGORY_KEYS if k != "harassment")
    assert "alt-profanity-check" in (backend.card_markdown() or "")
    other = create_backend(
        BackendSpec(plugin="profanity", options={"category": "hate", "threshold": 0.9}), settings
    )
    assert set(other.score(["idiot"])[0].scores) == {"hate"} and other.default_thresholds["hate"] == 0.9
    with pytest.raises(ConfigError, match="unknown category 'rudeness'"):
        create_backend(BackendSpec(plugin="profanity", options={"category": "rudeness"}), settings)


def test_a_missing_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(profanity, "PACKAGE", "no_such_package_here")
    with pytest.raises(DependencyMissing, match="pip install alt-profanity-check"):
        profanity.package_files()


def test_serving_never_imports_the_package_or_scikit_learn(tmp_path: Path) -> None:
    import subprocess
    import sys

    ProfanityWeights.load(tmp_path)  # the cache holds the weights now
    code = (
        "import sys; from pathlib import Path; "
        "from bastion.moderation.backends.profanity import ProfanityWeights; "
        f"w = ProfanityWeights.load(Path({str(tmp_path)!r})); w.probabilities(['you idiot']); "
        "print(sorted(m for m in ('profanity_check', 'sklearn', 'joblib') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
