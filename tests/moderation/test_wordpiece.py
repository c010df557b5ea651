"""The ASCII WordPiece fast path gives the Rust tokenizer's tokens and offsets exactly, or steps aside."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import pytest

from bastion.moderation import datasets
from bastion.moderation.encoder import WindowTokenizer, resolve_model_path
from bastion.moderation.train import default_artifacts_dir
from bastion.moderation.wordpiece import AsciiWordPiece

DATA = Path(os.environ.get("BASTION_DATA_DIR", Path(__file__).resolve().parents[3] / "shared" / "data"))
ENCODER = resolve_model_path(default_artifacts_dir() / "encoder")
WINDOW = 128


@pytest.fixture(scope="module")
def tokenizer_json() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ENCODER / "tokenizer.json").read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def rust() -> Any:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(ENCODER / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(WINDOW, stride=32, strategy="longest_first")
    return tokenizer


def user_texts() -> list[str]:
    """Real posts and comments from four public sets, plus random ASCII with every kind of punctuation."""
    if not DATA.is_dir():
        pytest.fail(f"the public data sets are not at {DATA}; set BASTION_DATA_DIR", pytrace=False)
    texts: list[str] = []
    for load in (datasets.load_davidson, datasets.load_hatexplain, datasets.load_toxic_spans):
        rows, _files = load(DATA)
        texts += [row.text for row in rows]
    rng = random.Random(3)
    alphabet = "abcXYZ019 .,!?'\"-_[]()#@$%^&*~`|\\/<>{}:;=+\t\n\r"
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80))) for _ in range(5000)]
    return texts


def test_the_fast_path_equals_the_rust_tokenizer_on_real_and_random_text(
    tokenizer_json: dict[str, Any], rust: Any
) -> None:
    fast = AsciiWordPiece.from_tokenizer_json(tokenizer_json)
    assert fast is not None
    texts = user_texts()
    taken = 0
    for text in texts:
        found = fast.encode(text, WINDOW)
        if found is None:
            continue
        taken += 1
        expected = rust.encode(text)
        assert not expected.overflowing, text
        assert found == (expected.ids, [tuple(o) for o in expected.offsets]), text
    assert taken > 0.8 * len(texts) and len(texts) > 30000


@pytest.mark.parametrize(
    "text",
    [
        "caf\u00e9 au lait",  # not ASCII
        "tab\tis fine but bell\x07 is not",  # a control character the normaliser would drop
        "fill in the [MASK] please",  # a special token's text, which the Rust tokenizer keeps whole
        "word " * 130,  # more than one window
        "a " * 10000,  # far more than one window: not even looked at
    ],
)
def test_the_fast_path_steps_aside(tokenizer_json: dict[str, Any], text: str) -> None:
    fast = AsciiWordPiece.from_tokenizer_json(tokenizer_json)
    assert fast is not None and fast.encode(text, WINDOW) is None


def test_unknown_and_overlong_words_are_one_unknown_token(tokenizer_json: dict[str, Any], rust: Any) -> None:
    fast = AsciiWordPiece.from_tokenizer_json(tokenizer_json)
    assert fast is not None
    for text in ("x" * 101 + " ok", "a " + "qzxqzxqzxqzx" * 3, "supercalifragilistic"):
        expected = rust.encode(text)
        assert fast.encode(text, WINDOW) == (expected.ids, [tuple(o) for o in expected.offsets])
    ids, offsets = fast.encode("x" * 101 + " ok", WINDOW) or ([], [])
    assert ids[1] == fast.unknown and offsets[1] == (0, 101)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("normalizer", "type"), "NFC"),
        (("normalizer", "lowercase"), False),
        (("pre_tokenizer", "type"), "Whitespace"),
        (("model", "type"), "BPE"),
        (("model", "continuing_subword_prefix"), "@@"),
    ],
)
def test_a_tokenizer_that_is_not_plain_bert_gets_no_fast_path(
    tokenizer_json: dict[str, Any], path: tuple[str, str], value: Any
) -> None:
    changed = json.loads(json.dumps(tokenizer_json))
    changed[path[0]][path[1]] = value
    assert AsciiWordPiece.from_tokenizer_json(changed) is None


def test_windows_are_the_same_with_and_without_the_fast_path() -> None:
    with_fast = WindowTokenizer(ENCODER, WINDOW, 32)
    without = WindowTokenizer(ENCODER, WINDOW, 32)
    without.fast = None
    assert with_fast.fast is not None
    texts = [
        "What is a good name for a small orange cat? Something short.",
        "Ünïcode text takes the Rust path. Another sentence here!",
        " ".join(["The committee reviewed the budget."] * 60) + " I will hurt you.",  # several windows
        "",
        "[CLS] literal special token",
        "ok",
    ]
    for batch in (texts, texts[:1], texts[2:3]):
        a, b = with_fast.windows(batch, sentences=True), without.windows(batch, sentences=True)
        assert a.ids == b.ids and a.spans == b.spans and a.segments == b.segments
        assert a.text_index.tolist() == b.text_index.tolist()


def test_a_text_that_just_fits_one_window_is_taken_and_one_token_more_is_not(
    tokenizer_json: dict[str, Any], rust: Any
) -> None:
    fast = AsciiWordPiece.from_tokenizer_json(tokenizer_json)
    assert fast is not None
    fits = "a " * (WINDOW - 2)  # with [CLS] and [SEP]: exactly one window
    expected = rust.encode(fits)
    assert not expected.overflowing and len(expected.ids) == WINDOW
    assert fast.encode(fits, WINDOW) == (expected.ids, [tuple(o) for o in expected.offsets])
    assert rust.encode(fits + "a").overflowing and fast.encode(fits + "a", WINDOW) is None
