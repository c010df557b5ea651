"""The n-gram heads of the embedded model: terms, pieces, training, storage and the blend."""

from __future__ import annotations

import math
import random
from collections import Counter
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from bastion.core.errors import ConfigError
from bastion.core.taxonomy import CATEGORY_KEYS
from bastion.moderation.ngrams import (
    FILE_NAME,
    PIECE_CHARS,
    PIECE_OVERLAP,
    NgramModel,
    NgramSpec,
    char_terms,
    fit_ngrams,
    pieces,
    terms,
)

HARASSMENT = CATEGORY_KEYS.index("harassment")
INSULTS = ["idiot", "moron", "loser", "clown", "imbecile"]
NOUNS = ["garden", "recipe", "train", "library", "weather", "concert", "bicycle", "museum"]


def corpus(n: int, seed: int = 0) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Short texts: half insult someone (harassment 1), half are everyday remarks (harassment 0). Only
    harassment is labelled; every other category is unknown (mask 0)."""
    rng = random.Random(seed)
    texts = []
    y = np.zeros((n, len(CATEGORY_KEYS)), np.float32)
    mask = np.zeros_like(y)
    for i in range(n):
        noun = rng.choice(NOUNS)
        if i % 2:
            texts.append(f"you are a {rng.choice(INSULTS)} and everyone at the {noun} knows it")
            y[i, HARASSMENT] = 1
        else:
            texts.append(f"we went to the {noun} and it was {rng.choice(['lovely', 'busy', 'quiet'])}")
        mask[i, HARASSMENT] = 1
    return texts, y, mask


@pytest.fixture(scope="module")
def model() -> NgramModel:
    texts, y, mask = corpus(120)
    return fit_ngrams(texts, y, mask, NgramSpec(min_df=2, min_positives=10))


def test_terms_are_words_bigrams_and_padded_character_grams() -> None:
    found = terms("Go  AWAY!")
    assert found[:3] == ["w:go", "w:away", "w:go away"]
    assert "c: go" in found and "c:go " in found and "c: go " in found
    assert "c:away!" in found and "c: away! " not in found  # 5-grams at most
    # A padded token no longer than n is its own single term, and no longer grams follow.
    assert char_terms("a") == ["c: a", "c:a ", "c: a "]
    assert char_terms("ab") == ["c: a", "c:ab", "c:b ", "c: ab", "c:ab ", "c: ab "]


def test_pieces_cover_long_text_with_overlap() -> None:
    assert pieces("short text") == ["short text"]
    text = " ".join(f"word{i}" for i in range(900))
    cut = pieces(text)
    assert len(cut) > 1 and all(len(p) <= PIECE_CHARS for p in cut)
    assert cut[0] == text[: len(cut[0])] and text.endswith(cut[-1])
    for a, b in pairwise(cut):
        assert a[-PIECE_OVERLAP // 2 :] in b  # neighbours overlap
    unbroken = "x" * (PIECE_CHARS * 2 + 5)  # no white space: cut at the limit
    assert "".join(p[: PIECE_CHARS - PIECE_OVERLAP] for p in pieces(unbroken)[:-1]) in unbroken


def test_features_are_unit_length_sublinear_tf_idf(model: NgramModel) -> None:
    text = "you are a moron you are a moron"
    keys, values = model.row(text)
    counts = Counter(model.vocabulary[t] for t in terms(text) if t in model.vocabulary)
    expected = {i: (1 + math.log(c)) * float(model.idf[i]) for i, c in counts.items()}
    norm = math.sqrt(sum(v * v for v in expected.values()))
    assert dict(zip(keys.tolist(), values.tolist(), strict=True)) == pytest.approx(
        {i: v / norm for i, v in expected.items()}, rel=1e-5
    )
    indptr, indices, _ = model.features([text, "€€€ ¥¥¥", text])
    assert indptr.tolist() == [0, len(keys), len(keys), 2 * len(keys)]  # unknown words: an empty row
    assert len(indices) == 2 * len(keys)


def test_trained_heads_separate_the_classes_and_only_labelled_categories_are_active(
    model: NgramModel,
) -> None:
    assert model.active.tolist() == [k == "harassment" for k in CATEGORY_KEYS]
    texts, y, _ = corpus(40, seed=7)
    probs = model.probabilities(texts)
    positive = probs[y[:, HARASSMENT] == 1, HARASSMENT]
    negative = probs[y[:, HARASSMENT] == 0, HARASSMENT]
    assert positive.min() > negative.max()
    assert (probs[:, ~model.active] == 0).all()


def test_blend_mixes_active_categories_only(model: NgramModel) -> None:
    texts = ["you are a clown and everyone at the museum knows it", "we went to the garden"]
    embedded = np.full((2, len(CATEGORY_KEYS)), 0.4)
    blended = model.blend(embedded, texts)
    lexical = model.probabilities(texts)[:, HARASSMENT]
    w = model.blend_weight
    np.testing.assert_allclose(blended[:, HARASSMENT], (1 - w) * 0.4 + w * lexical)
    others = [j for j in range(len(CATEGORY_KEYS)) if j != HARASSMENT]
    np.testing.assert_array_equal(blended[:, others], embedded[:, others])
    assert blended[0, HARASSMENT] > blended[1, HARASSMENT]


def test_an_insult_inside_a_long_text_is_diluted_only_by_its_piece(model: NgramModel) -> None:
    insult = "you are a moron and everyone at the library knows it"
    filler = " ".join(["we went to the garden and it was quiet"] * 80)
    text = f"{filler} {insult} {filler}"
    assert len(pieces(text)) > 2
    whole = model.probabilities([text])[0, HARASSMENT]
    best_piece = model.probabilities(pieces(text))[:, HARASSMENT].max()
    assert whole == pytest.approx(best_piece)
    # Scored as one row, the whole text would dilute the insult far more than its own piece does.
    as_one_row = 1 / (1 + math.exp(-model.logits([text])[0, HARASSMENT]))
    assert whole > as_one_row + 0.03 and whole > model.probabilities([filler])[0, HARASSMENT] + 0.05


def test_save_and_load_round_trip(model: NgramModel, tmp_path: Path) -> None:
    path = model.save(tmp_path)
    assert path.name == FILE_NAME
    loaded = NgramModel.in_folder(tmp_path)
    assert loaded is not None and loaded.vocabulary == model.vocabulary
    texts = ["you are an idiot", "the concert was busy", ""]
    # Weights are stored as float16.
    np.testing.assert_allclose(loaded.probabilities(texts), model.probabilities(texts), atol=2e-3)
    assert NgramModel.in_folder(tmp_path / "elsewhere") is None


def test_damaged_files_are_config_errors(model: NgramModel, tmp_path: Path) -> None:
    path = model.save(tmp_path)
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    (tmp_path / "garbage" / FILE_NAME).parent.mkdir()
    (tmp_path / "garbage" / FILE_NAME).write_bytes(b"not a zip file")
    with pytest.raises(ConfigError, match="cannot read"):
        NgramModel.in_folder(tmp_path / "garbage")
    broken = {
        "short idf": {**arrays, "idf": arrays["idf"][:-1]},
        "blend weight": {**arrays, "blend_weight": np.float32(1.5)},
        "categories": {**arrays, "categories": np.array(CATEGORY_KEYS[::-1])},
        "missing bias": {k: v for k, v in arrays.items() if k != "bias"},
    }
    for name, changed in broken.items():
        folder = tmp_path / name.replace(" ", "-")
        folder.mkdir()
        np.savez(folder / FILE_NAME, **changed)
        with pytest.raises(ConfigError):
            NgramModel.in_folder(folder)


def test_categories_are_blended_only_where_they_help_on_unseen_sources() -> None:
    import copy

    from bastion.moderation.train import select_ngram_categories

    texts, y, mask = corpus(150, seed=3)
    families = np.array([f"family-{i % 3}" for i in range(len(texts))])
    spec = NgramSpec(min_df=2, min_positives=10, selection_folds=3)
    fitted = fit_ngrams(texts, y, mask, spec)
    rng = np.random.default_rng(0)
    noise = rng.random(y.shape)
    # Uninformative embedding scores: the n-grams help, so harassment stays blended.
    helped = copy.deepcopy(fitted)
    report = select_ngram_categories(helped, texts, y, mask, families, noise, spec)
    assert report["harassment"]["kept"] and helped.active[HARASSMENT]
    assert report["harassment"]["blended"] > report["harassment"]["embedding_heads"]
    # Perfect embedding scores: nothing can beat them, so the category is not blended.
    beaten = copy.deepcopy(fitted)
    report = select_ngram_categories(beaten, texts, y, mask, families, y.astype(float), spec)
    assert not report["harassment"]["kept"] and not beaten.active.any()
    # Without source-held-out embedding scores nothing changes.
    untouched = copy.deepcopy(fitted)
    assert select_ngram_categories(untouched, texts, y, mask, families, None, spec) == {}
    assert untouched.active.tolist() == fitted.active.tolist()
