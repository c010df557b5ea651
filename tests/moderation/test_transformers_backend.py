"""The `transformers` backend on tiny models built and trained on the fly (no downloads)."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from tokenizers import Tokenizer, models, pre_tokenizers, processors  # noqa: E402

from bastion.core.errors import ConfigError, UnknownCategory  # noqa: E402
from bastion.core.settings import BackendSpec, load_settings  # noqa: E402
from bastion.core.taxonomy import CATEGORY_KEYS  # noqa: E402
from bastion.moderation.backends.base import create_backend, moderation_backends  # noqa: E402
from bastion.moderation.backends.transformers_backend import (  # noqa: E402
    DEFAULT_CODES,
    GUARD_TEMPLATE,
    TransformersBackend,
)

FILLER = [
    "the", "a", "cat", "dog", "sat", "on", "mat", "today", "we", "went", "to", "park", "and", "it", "was",
    "sunny", "very", "nice",
]  # fmt: skip
MARKER = "zap"
MARKER2 = "bop"


def make(**options: Any) -> TransformersBackend:
    backend = create_backend(BackendSpec(plugin="transformers", options=options), load_settings())
    assert isinstance(backend, TransformersBackend)
    return backend


def word_tokenizer(words: list[str], special: dict[str, str], bert_style: bool) -> Any:
    """A word-level fast tokenizer over `words` (plus the special tokens)."""
    vocab: dict[str, int] = {}
    for token in [*special.values(), *words]:
        vocab.setdefault(token, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token=special["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if bert_style:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
        )
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=512, **special)


@contextmanager
def one_thread() -> Iterator[None]:
    """Tiny models train ~10x faster on one thread than with threads fighting over two cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def random_text(rng: random.Random, marker: str | None = None, n: int | None = None) -> str:
    words = [rng.choice(FILLER) for _ in range(n or rng.randint(3, 10))]
    if marker:
        words.insert(rng.randint(0, len(words)), marker)
    return " ".join(words)


# --- classifier -----------------------------------------------------------------------------------

BERT_SPECIAL = {
    "unk_token": "[UNK]",
    "pad_token": "[PAD]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}


def save_classifier(path: Path, id2label: dict[int, str], problem_type: str | None, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    tokenizer = word_tokenizer([*FILLER, MARKER, MARKER2], BERT_SPECIAL, bert_style=True)
    config = transformers.BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
        num_labels=len(id2label),
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
        problem_type=problem_type,
        pad_token_id=tokenizer.pad_token_id,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model = transformers.BertForSequenceClassification(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def direct_probs(path: Path, text: str, multi: bool) -> list[float]:
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(path).eval()
    with torch.no_grad():
        logits = model(**tokenizer(text, return_tensors="pt")).logits[0]
    return (torch.sigmoid(logits) if multi else logits.softmax(-1)).tolist()


@pytest.fixture(scope="module")
def multi_label_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    labels = {0: "toxic", 1: "threat", 2: "other"}
    return save_classifier(tmp_path_factory.mktemp("clf"), labels, "multi_label_classification")


def test_registered() -> None:
    assert moderation_backends.get("transformers") is TransformersBackend


def test_label_map_puts_scores_on_the_right_categories(multi_label_model: Path) -> None:
    backend = make(model_path=str(multi_label_model), label_map={"toxic": "harassment", "threat": "violence"})
    text = "the cat sat on the mat"
    (result,) = backend.score([text])
    expected = direct_probs(multi_label_model, text, multi=True)
    assert set(result.scores) == set(CATEGORY_KEYS)
    assert result.scores["harassment"] == pytest.approx(expected[0], abs=1e-5)
    assert result.scores["violence"] == pytest.approx(expected[1], abs=1e-5)
    assert all(v == 0.0 for k, v in result.scores.items() if k not in ("harassment", "violence"))
    assert backend.describe()["labels"] == {"0": "harassment", "1": "violence"}
    assert backend.problem_type == "multi_label"


def test_labels_that_are_category_keys_need_no_map(tmp_path: Path) -> None:
    path = save_classifier(tmp_path, {0: "violence", 1: "junk", 2: "hate"}, "multi_label_classification")
    (result,) = make(model_path=str(path)).score(["dog"])
    expected = direct_probs(path, "dog", multi=True)
    assert result.scores["violence"] == pytest.approx(expected[0], abs=1e-5)
    assert result.scores["hate"] == pytest.approx(expected[2], abs=1e-5)
    assert sum(v > 0 for v in result.scores.values()) == 2


def test_single_label_uses_softmax(tmp_path: Path) -> None:
    path = save_classifier(tmp_path, {0: "ok", 1: "harassment"}, "single_label_classification", seed=3)
    (result,) = make(model_path=str(path)).score(["we went to park"])
    expected = direct_probs(path, "we went to park", multi=False)
    assert result.scores["harassment"] == pytest.approx(expected[1], abs=1e-5)
    # the option overrides the config
    (sig,) = make(model_path=str(path), problem_type="multi_label").score(["we went to park"])
    assert sig.scores["harassment"] == pytest.approx(
        direct_probs(path, "we went to park", multi=True)[1], abs=1e-5
    )


def test_label_errors(multi_label_model: Path) -> None:
    with pytest.raises(ConfigError, match="'nope'"):
        make(model_path=str(multi_label_model), label_map={"nope": "hate"})
    with pytest.raises(ConfigError, match="label_map"):
        make(model_path=str(multi_label_model))  # no label is a category and no map
    with pytest.raises(UnknownCategory):
        make(model_path=str(multi_label_model), label_map={"toxic": "rude"})


def test_missing_model_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        make(model_path=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="not on disk"):
        make(model_path="bastion-test-org/no-such-model-anywhere")
    with pytest.raises(ConfigError, match="does not exist"):
        make(model_path=str(tmp_path / "nowhere"), mode="guard")


def test_long_text_is_chunked(multi_label_model: Path) -> None:
    backend = make(
        model_path=str(multi_label_model),
        label_map={"toxic": "harassment"},
        max_length=16,
        stride=4,
        batch_size=1,
    )
    rng = random.Random(1)
    short, long = random_text(rng, n=5), random_text(rng, n=100)
    backend.score([short])
    assert backend.forward_calls == 1
    backend.score([long])
    # 100 words in windows of 14 tokens (16 minus [CLS]/[SEP]) advancing by 10: 10 windows
    assert backend.forward_calls == 1 + 10


@pytest.fixture(scope="module")
def trained_classifier(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """Train the tiny classifier until the marker word flips 'toxic' on; return its folder and weights."""
    path = save_classifier(
        tmp_path_factory.mktemp("trained"), {0: "toxic", 1: "threat"}, "multi_label_classification", seed=7
    )
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = random.Random(0)
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    with one_thread():
        for _ in range(250):
            flags = [rng.random() < 0.5 for _ in range(16)]
            texts = [random_text(rng, MARKER if f else None) for f in flags]
            batch = tokenizer(texts, padding=True, return_tensors="pt")
            labels = torch.tensor([[float(f), 0.0] for f in flags])
            loss = model(**batch, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.save_pretrained(path)
    return path, before


def test_training_flips_the_score_through_the_backend(
    trained_classifier: tuple[Path, dict[str, Any]],
) -> None:
    path, before = trained_classifier
    after = transformers.AutoModelForSequenceClassification.from_pretrained(path).state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the weights really changed
    backend = make(model_path=str(path), label_map={"toxic": "harassment", "threat": "violence"})
    rng = random.Random(42)
    clean = [random_text(rng) for _ in range(8)]
    marked = [random_text(rng, MARKER) for _ in range(8)]
    results = backend.score(clean + marked)
    assert all(r.scores["harassment"] < 0.2 for r in results[:8])
    assert all(r.scores["harassment"] > 0.8 for r in results[8:])
    assert all(r.scores["violence"] < 0.2 for r in results)


def test_max_over_chunks_finds_a_marker_at_the_end(trained_classifier: tuple[Path, dict[str, Any]]) -> None:
    path, _ = trained_classifier
    backend = make(model_path=str(path), label_map={"toxic": "harassment"}, max_length=16, stride=4)
    rng = random.Random(5)
    body = random_text(rng, n=60)
    clean, marked = backend.score([body, body + " " + MARKER])
    assert clean.scores["harassment"] < 0.2
    assert marked.scores["harassment"] > 0.8  # only the last window sees the marker
    assert len(backend.tokenizer(body)["input_ids"]) > 3 * 16


# --- guard ------------------------------------------------------------------------------------------

GUARD_STEPS = 150
GUARD_MAX_STEPS = 1500
GUARD_SPECIAL = {"unk_token": "<unk>", "pad_token": "<pad>", "eos_token": "<eos>"}


def prompt_words() -> list[str]:
    from bastion.core.taxonomy import BY_KEY

    policy = "\n".join(f"{code}: {cat}. {BY_KEY[cat].definition}" for code, cat in DEFAULT_CODES.items())
    text = GUARD_TEMPLATE.format(categories=policy, text=" ".join(FILLER))
    pieces = [p for p, _ in pre_tokenizers.Whitespace().pre_tokenize_str(text)]
    return list(dict.fromkeys([*pieces, "safe", "unsafe", *DEFAULT_CODES, ",", MARKER, MARKER2]))


@pytest.fixture(scope="module")
def guard_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama trained to answer 'unsafe S1 , S12' for MARKER, 'unsafe S11' for MARKER2, else 'safe'."""
    path = tmp_path_factory.mktemp("guard")
    tokenizer = word_tokenizer(prompt_words(), GUARD_SPECIAL, bert_style=False)
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    backend = make(mode="guard", model_path=str(path))  # the backend's own prompt builder

    targets = {MARKER: "unsafe S1 , S12", MARKER2: "unsafe S11", None: "safe"}
    rng = random.Random(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    probes = [(random_text(random.Random(100 + i), marker), marker) for i in range(4) for marker in targets]

    def learned() -> bool:
        """Greedy answers match the targets on texts it never trained on (CPU kernels change how many
        steps the same seed needs)."""
        model.eval()
        try:
            for text, marker in probes:
                prompt = backend._prompt_ids(text)
                out = model.generate(
                    torch.tensor([prompt]),
                    max_new_tokens=8,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                )
                if (
                    tokenizer.decode(out[0, len(prompt) :], skip_special_tokens=True).strip()
                    != targets[marker]
                ):
                    return False
            return True
        finally:
            model.train()

    with one_thread():
        for step in range(GUARD_MAX_STEPS):
            if step >= GUARD_STEPS and step % 50 == 0 and learned():
                break
            rows = []
            for marker in (MARKER, MARKER2, None, None):
                prompt = backend._prompt_ids(random_text(rng, marker))
                answer = tokenizer(targets[marker], add_special_tokens=False)["input_ids"] + [
                    tokenizer.eos_token_id
                ]
                rows.append((prompt + answer, [-100] * len(prompt) + answer))
            width = max(len(r[0]) for r in rows)
            ids = torch.tensor([r[0] + [tokenizer.pad_token_id] * (width - len(r[0])) for r in rows])
            labels = torch.tensor([r[1] + [-100] * (width - len(r[1])) for r in rows])
            mask = torch.tensor([[1] * len(r[0]) + [0] * (width - len(r[0])) for r in rows])
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.save_pretrained(path)
    return path


def test_guard_parses_categories_and_scores_probabilities(guard_model: Path) -> None:
    backend = make(mode="guard", model_path=str(guard_model), batch_size=4)
    rng = random.Random(9)
    texts = [random_text(rng, MARKER), random_text(rng), random_text(rng, MARKER2), random_text(rng, n=3)]
    marked, clean, marked2, short = backend.score(texts)
    assert marked.scores["harassment"] > 0.8  # S1
    assert marked.scores["violence"] == marked.scores["harassment"]  # S12 gets the same P(unsafe)
    assert 0.0 < marked.scores["harassment"] < 1.0  # a probability, not a 0/1 verdict
    assert sum(v > 0 for v in marked.scores.values()) == 2
    assert marked2.scores["sexual/minors"] > 0.8  # S11
    assert sum(v > 0 for v in marked2.scores.values()) == 1
    for result in (clean, short):
        assert all(v < 0.2 for v in result.scores.values())
        assert set(result.scores) == set(CATEGORY_KEYS)


def test_guard_custom_codes(guard_model: Path) -> None:
    backend = make(mode="guard", model_path=str(guard_model), category_codes={"S1": "hate", "S12": "illicit"})
    (result,) = backend.score([random_text(random.Random(3), MARKER)])
    assert result.scores["hate"] > 0.8
    assert result.scores["illicit"] == result.scores["hate"]
    assert result.scores["harassment"] == 0.0
    assert backend.describe()["category_codes"] == {"S1": "hate", "S12": "illicit"}


def test_guard_forced_generation_below_the_verdict(guard_model: Path) -> None:
    text = random_text(random.Random(4))
    eager = make(mode="guard", model_path=str(guard_model), min_unsafe=0.0)
    eager.score([text])
    assert eager.forward_calls == 2  # greedy said safe, so a second pass asks for categories
    lazy = make(mode="guard", model_path=str(guard_model), min_unsafe=1.0)
    lazy.score([text])
    assert lazy.forward_calls == 1


def test_guard_chunks_long_text(guard_model: Path) -> None:
    probe = make(mode="guard", model_path=str(guard_model))
    overhead = len(probe._prompt_ids(""))
    backend = make(
        mode="guard", model_path=str(guard_model), max_length=overhead + 24, stride=4, batch_size=2
    )
    rng = random.Random(11)
    body = random_text(rng, n=80)
    clean, marked = backend.score([body, body + " " + MARKER])
    assert backend.forward_calls >= 4  # several chunks per text, two per generate call
    assert marked.scores["harassment"] > 0.8
    assert clean.scores["harassment"] < 0.2


def test_guard_uses_the_chat_template_when_present(guard_model: Path, tmp_path: Path) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(guard_model)
    # A template that slips the marker into the text: only a backend that renders it scores the text unsafe.
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['content'] | replace('the cat', 'the cat zap') }}{% endfor %}"
    )
    folder = tmp_path / "templated"
    tokenizer.save_pretrained(folder)
    transformers.AutoModelForCausalLM.from_pretrained(guard_model).save_pretrained(folder)
    backend = make(mode="guard", model_path=str(folder))
    plain_backend = make(mode="guard", model_path=str(guard_model))
    marker_id = tokenizer.convert_tokens_to_ids(MARKER)
    assert marker_id in backend._prompt_ids("the cat sat")
    assert marker_id not in plain_backend._prompt_ids("the cat sat")
    (result,) = backend.score(["the cat sat"])
    (plain,) = plain_backend.score(["the cat sat"])
    assert plain.scores["harassment"] < 0.2
    assert result.scores["harassment"] > 0.8


def test_invalid_options(multi_label_model: Path) -> None:
    with pytest.raises(ConfigError, match="stride"):
        make(model_path=str(multi_label_model), max_length=32, stride=16)
    with pytest.raises(ConfigError, match="mode"):
        make(model_path=str(multi_label_model), mode="judge")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            make(model_path=str(multi_label_model), label_map={"toxic": "hate"}, device="cuda")
    with pytest.raises(ConfigError, match="not a torch device"):
        make(model_path=str(multi_label_model), label_map={"toxic": "hate"}, device="tpu-ish")
