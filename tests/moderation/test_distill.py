"""Distilling a smaller encoder: a tiny run on real data, then the student served by the embedded backend."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bastion.core.errors import ConfigError
from bastion.core.settings import BackendSpec, load_settings
from bastion.moderation.backends.base import create_backend
from bastion.moderation.distill import DistillSpec, distill_encoder, student_from
from bastion.moderation.encoder import Encoder, resolve_model_path
from bastion.moderation.train import default_artifacts_dir


@pytest.fixture(scope="module")
def student(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("student")
    spec = DistillSpec(layers=(0, 3), epochs=2, batch_size=16, learning_rate=5e-4, max_texts=64)
    record = distill_encoder(load_settings(), out, spec=spec, sources=["seed"])
    return out, record


def test_student_keeps_the_chosen_layers_and_learns_the_teacher(student: tuple[Path, dict]) -> None:
    folder, record = student
    config = json.loads((folder / "config.json").read_text())
    assert config["num_hidden_layers"] == 2
    assert (folder / "tokenizer.json").is_file() and (folder / "distill.json").is_file()
    assert record["texts"] == 64 and len(record["loss_per_epoch"]) == 2
    assert record["loss_per_epoch"][1] < record["loss_per_epoch"][0]

    teacher_dir = resolve_model_path(None)
    texts = ["I will hurt you tomorrow.", "The museum opens at nine.", "Thanks for the recipe!"]
    teacher = Encoder(teacher_dir).encode(texts)
    untrained_dir = folder.parent / "untrained"
    student_from(teacher_dir, (0, 3)).save_pretrained(str(untrained_dir))
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (untrained_dir / name).write_bytes((teacher_dir / name).read_bytes())
    before = Encoder(untrained_dir).encode(texts)
    after = Encoder(folder).encode(texts)
    assert after.shape == (3, 384)
    assert np.allclose(np.linalg.norm(after, axis=1), 1.0, atol=1e-4)
    # Distillation moved the student's embeddings towards the teacher's.
    assert (after * teacher).sum(1).mean() > (before * teacher).sum(1).mean()


def test_embedded_backend_serves_a_student_encoder(student: tuple[Path, dict]) -> None:
    folder, _ = student
    backend = create_backend(
        BackendSpec(plugin="embedded", options={"encoder_path": str(folder), "runtime": "torch"}),
        load_settings(),
    )
    try:
        assert backend.describe()["encoder_path"] == str(folder)
        scores = backend.score(["hello there"])[0].scores
        assert len(scores) == 13 and all(0.0 <= v <= 1.0 for v in scores.values())
    finally:
        backend.close()


def test_bad_layers_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="distinct indices"):
        student_from(resolve_model_path(None), (0, 9))


def test_distill_cli_rejects_bad_layers() -> None:
    from bastion.cli import app

    result = CliRunner().invoke(app, ["moderation", "distill", "--layers", "a,b"])
    assert result.exit_code == 1
    assert "--layers must be comma-separated integers" in result.output


@pytest.mark.parametrize("command", ["train", "distill"])
def test_training_commands_reject_an_unknown_extra_source(command: str, tmp_path: Path) -> None:
    from bastion.cli import app

    result = CliRunner().invoke(
        app, ["moderation", command, "--with-source", "nope", "--output-dir", str(tmp_path / "out")]
    )
    assert result.exit_code == 1
    assert "unknown data source 'nope'" in result.output
    assert not (tmp_path / "out").exists()


def test_train_passes_the_extra_source_beside_the_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from bastion.cli import app
    from bastion.moderation import train
    from bastion.moderation.datasets import default_sources

    seen: dict[str, object] = {}

    def fake_train_heads(settings: object, **kwargs: object) -> dict[str, object]:
        seen.update(kwargs)
        return {"trained": True}

    monkeypatch.setattr(train, "train_heads", fake_train_heads)
    args = ["moderation", "train", "--with-source", "seed-stance", "--json", "--output-dir", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert seen["sources"] == [*default_sources(), "seed-stance"]
    result = CliRunner().invoke(app, ["moderation", "train", "--json", "--output-dir", str(tmp_path)])
    assert result.exit_code == 0 and seen["sources"] is None


def test_task_fine_tuning_starts_from_a_student_and_moves_it(
    student: tuple[Path, dict], tmp_path: Path
) -> None:
    from safetensors.numpy import load_file

    folder, _ = student
    spec = DistillSpec(
        epochs=1,
        batch_size=16,
        learning_rate=5e-4,
        max_texts=32,
        task_weight=1.0,
        start_from=str(folder),
        heads_from=str(default_artifacts_dir()),
    )
    record = distill_encoder(load_settings(), tmp_path / "tuned", spec=spec, sources=["seed"])
    assert record["spec"]["task_weight"] == 1.0 and record["spec"]["start_from"] == str(folder)
    before = load_file(str(folder / "model.safetensors"))
    after = load_file(str(tmp_path / "tuned" / "model.safetensors"))
    assert json.loads((tmp_path / "tuned" / "config.json").read_text())["num_hidden_layers"] == 2
    assert any(not np.array_equal(before[k], after[k]) for k in before)


def test_layers_with_a_start_encoder_pick_its_own_blocks(student: tuple[Path, dict], tmp_path: Path) -> None:
    folder, _ = student
    spec = DistillSpec(layers=(1,), epochs=1, batch_size=16, max_texts=16, start_from=str(folder))
    record = distill_encoder(load_settings(), tmp_path / "one", spec=spec, sources=["seed"])
    assert record["num_layers"] == 1 and record["spec"]["layers"] == (1,)
    assert json.loads((tmp_path / "one" / "config.json").read_text())["num_hidden_layers"] == 1
    with pytest.raises(ConfigError, match=r"distinct indices in 0\.\.1"):
        distill_encoder(
            load_settings(),
            tmp_path / "bad",
            spec=DistillSpec(layers=(0, 2), max_texts=8, start_from=str(folder)),
            sources=["seed"],
        )
    assert not (tmp_path / "bad").exists()


def test_a_missing_start_encoder_is_a_config_error(student: tuple[Path, dict], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot load the encoder"):
        distill_encoder(
            load_settings(),
            tmp_path / "x",
            spec=DistillSpec(max_texts=8, task_weight=1.0, start_from=str(tmp_path / "missing")),
            sources=["seed"],
        )


def _tiny_bert(intermediate: int = 12, heads: int = 2) -> tuple:
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=heads,
        intermediate_size=intermediate,
    )
    model = transformers.BertModel(config).eval()
    ids = torch.randint(1, 50, (4, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    return model, ids, mask


def test_pruning_drops_the_neurons_that_add_nothing_and_keeps_the_output() -> None:
    import torch

    from bastion.moderation.distill import ffn_importance, prune_ffn

    model, ids, mask = _tiny_bert()
    dead = {0: [1, 4, 7], 1: [0, 2, 11]}
    with torch.no_grad():
        for block, columns in dead.items():
            model.encoder.layer[block].output.dense.weight[:, columns] = 0.0
        before = model(input_ids=ids, attention_mask=mask).last_hidden_state
    importance = ffn_importance(model, [(ids, mask)])
    for block, columns in dead.items():
        assert all(float(importance[block][c]) == 0.0 for c in columns)
        assert all(float(importance[block][c]) > 0.0 for c in range(12) if c not in columns)
    pruned = prune_ffn(model, 9, importance)
    assert pruned.config.intermediate_size == 9
    assert tuple(pruned.encoder.layer[0].intermediate.dense.weight.shape) == (9, 16)
    assert tuple(pruned.encoder.layer[1].output.dense.weight.shape) == (16, 9)
    with torch.no_grad():
        after = pruned(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.allclose(before, after, atol=1e-5)


def test_pruning_a_live_neuron_changes_the_output_and_bad_sizes_are_config_errors() -> None:
    import torch

    from bastion.moderation.distill import ffn_importance, prune_ffn

    model, ids, mask = _tiny_bert()
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask).last_hidden_state
    importance = ffn_importance(model, [(ids, mask)])
    for size in (0, 13):
        with pytest.raises(ConfigError, match="feed-forward size"):
            prune_ffn(model, size, importance)
    pruned = prune_ffn(model, 6, importance)
    with torch.no_grad():
        after = pruned(input_ids=ids, attention_mask=mask).last_hidden_state
    assert not torch.allclose(before, after, atol=1e-3)


def test_distilling_with_a_smaller_feed_forward_writes_a_pruned_encoder(
    student: tuple[Path, dict], tmp_path: Path
) -> None:
    folder, _ = student
    spec = DistillSpec(
        epochs=1, batch_size=16, learning_rate=5e-4, max_texts=32, start_from=str(folder), ffn_size=256
    )
    record = distill_encoder(load_settings(), tmp_path / "pruned", spec=spec, sources=["seed"])
    config = json.loads((tmp_path / "pruned" / "config.json").read_text())
    assert config["intermediate_size"] == 256 and record["ffn_pruned_from"] == 1536
    embedding = Encoder(tmp_path / "pruned").encode(["The museum opens at nine."])
    assert embedding.shape == (1, 384)


def test_the_card_names_a_pruning_anywhere_in_the_distill_chain(tmp_path: Path) -> None:
    from bastion.moderation.train import pruning_words

    (tmp_path / "config.json").write_text(json.dumps({"intermediate_size": 768}))
    pruned_then_tuned = {"seed": 4, "started_from": {"seed": 3, "ffn_pruned_from": 1536}}
    assert pruning_words(pruned_then_tuned, tmp_path) == (
        ", its feed-forward layers pruned from 1536 to 768 neurons"
    )
    assert pruning_words({"seed": 1, "started_from": {"seed": 0}}, tmp_path) == ""
    assert pruning_words(None, tmp_path) == ""
    (tmp_path / "config.json").write_text(json.dumps({"intermediate_size": 768, "attention_heads_kept": 6}))
    both = {"seed": 6, "attention_heads_pruned_from": 12, "started_from": pruned_then_tuned}
    assert pruning_words(both, tmp_path) == (
        ", its attention cut from 12 to 6 heads per block,"
        " its feed-forward layers pruned from 1536 to 768 neurons"
    )


def test_head_pruning_drops_the_heads_that_add_nothing_and_keeps_the_output() -> None:
    import torch

    from bastion.moderation.distill import head_importance, prune_heads

    model, ids, mask = _tiny_bert(heads=4)  # head size 4
    with torch.no_grad():
        model.encoder.layer[0].attention.output.dense.weight[:, 4:8] = 0.0  # head 1 of block 0
        model.encoder.layer[1].attention.output.dense.weight[:, 12:16] = 0.0  # head 3 of block 1
        before = model(input_ids=ids, attention_mask=mask).last_hidden_state
    importance = head_importance(model, [(ids, mask)])
    assert [float(importance[0][1]), float(importance[1][3])] == [0.0, 0.0]
    assert all(float(importance[0][h]) > 0.0 for h in (0, 2, 3))
    for bad in (0, 5):
        with pytest.raises(ConfigError, match="attention heads"):
            prune_heads(model, bad, importance)
    pruned = prune_heads(model, 3, importance)
    assert pruned.config.attention_heads_kept == 3
    assert tuple(pruned.encoder.layer[0].attention.self.query.weight.shape) == (12, 16)
    assert tuple(pruned.encoder.layer[1].attention.output.dense.weight.shape) == (16, 12)
    with torch.no_grad():
        after = pruned(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.allclose(before, after, atol=1e-5)
    # A live head is missed.
    cut = prune_heads(pruned, 2, head_importance(pruned, [(ids, mask)]))
    with torch.no_grad():
        after = cut(input_ids=ids, attention_mask=mask).last_hidden_state
    assert not torch.allclose(before, after, atol=1e-3)


def test_an_encoder_with_fewer_heads_is_saved_reloaded_and_served_by_both_runtimes(
    student: tuple[Path, dict], tmp_path: Path
) -> None:
    from bastion.moderation.encoder import load_transformer

    folder, _ = student
    spec = DistillSpec(
        epochs=1, batch_size=16, learning_rate=5e-4, max_texts=32, start_from=str(folder), attention_heads=4
    )
    out = tmp_path / "fewer_heads"
    record = distill_encoder(load_settings(), out, spec=spec, sources=["seed"])
    config = json.loads((out / "config.json").read_text())
    assert config["attention_heads_kept"] == 4 and record["attention_heads_pruned_from"] == 12
    model = load_transformer(out)
    assert tuple(model.encoder.layer[1].attention.self.value.weight.shape) == (128, 384)
    assert not model.training

    texts = ["I will hurt you tomorrow.", "The museum opens at nine. Thanks for the recipe!"]
    scores = {}
    for runtime in ("torch", "onnx"):
        backend = create_backend(
            BackendSpec(
                plugin="embedded",
                options={"encoder_path": str(out), "runtime": runtime, "quantize": False, "cache_size": 0},
            ),
            load_settings(home=tmp_path / "home"),
        )
        try:
            scores[runtime] = np.array([list(r.scores.values()) for r in backend.score(texts)])
        finally:
            backend.close()
    # The fused graph (attention with 4 heads of 32) computes what torch computes.
    assert np.abs(scores["torch"] - scores["onnx"]).max() < 1e-4


def test_the_card_names_teacher_layers_only_for_a_run_from_the_teacher() -> None:
    from bastion.moderation.card import encoder_words

    def words(spec: dict) -> str:
        return encoder_words({"encoder": {"distilled": {"spec": spec, "texts": 10}}})

    assert words({"layers": [0, 2, 4]}).startswith("layers [0, 2, 4] of all-MiniLM-L6-v2")
    assert words({"layers": None, "start_from": "/students/a"}).startswith("a student of all-MiniLM-L6-v2")
    assert words({"layers": [0, 2], "start_from": "/students/a"}).startswith("a student of")


def test_context_mixes_put_a_text_after_benign_ones_within_the_window() -> None:
    import random

    from bastion.moderation.distill import context_mixes

    cls, sep = 101, 102
    encoded = [[cls, *range(1000 + 10 * i, 1000 + 10 * i + n), sep] for i, n in enumerate((3, 5, 4, 60, 2))]
    benign = [0, 1, 2]
    mixes = context_mixes(encoded, benign, 40, 16, random.Random(0))
    assert len(mixes) == 40
    for ids, inner in mixes:
        body = encoded[inner][1:-1][:13]
        assert ids[0] == cls and ids[-1] == sep and len(ids) <= 16
        assert ids[-1 - len(body) : -1] == body  # the inner text, whole or cut to fit, ends the window
        context = ids[1 : -1 - len(body)]
        assert all(any(t in encoded[b] for b in benign) for t in context)
    assert {inner for _, inner in mixes} == set(range(5))
    assert any(len(ids) > len(encoded[inner]) for ids, inner in mixes)  # some context was added
    assert context_mixes(encoded, [], 5, 16, random.Random(0)) == []


def test_context_mix_needs_the_task_loss(tmp_path: Path) -> None:
    spec = DistillSpec(epochs=1, batch_size=16, max_texts=16, layers=(0,), context_mix=0.5)
    with pytest.raises(ConfigError, match="task loss"):
        distill_encoder(load_settings(), tmp_path / "out", spec=spec, sources=["seed"])


def test_a_pass_draws_its_texts_by_seed_without_the_test_sources() -> None:
    import random

    from bastion.moderation.datasets import LabeledText, make_labels
    from bastion.moderation.distill import pass_texts
    from bastion.moderation.train import TrainSpec

    spec = TrainSpec()
    rows = [LabeledText(f"text {i}", make_labels(zero=["hate"]), "davidson") for i in range(20)]
    rows += [LabeledText("text 3", make_labels(pos=["hate"]), "stormfront")]  # the same text twice
    rows += [LabeledText(f"held out {i}", make_labels(), spec.test_sources[0]) for i in range(5)]
    drawn = pass_texts(rows, spec, seed=3, max_texts=8)
    assert len(drawn) == 8 and not any(t.startswith("held out") for t in drawn)
    assert drawn == pass_texts(rows, spec, seed=3, max_texts=8)
    assert list(drawn) != list(pass_texts(rows, spec, seed=4, max_texts=8))
    assert list(pass_texts(rows, spec, seed=3, max_texts=None))[:8] == list(drawn)
    assert len(pass_texts(rows, spec, seed=3, max_texts=None)) == 20  # one row per text
    # A pass's own random generator, at the same state, draws the same texts.
    assert list(pass_texts(rows, spec, 3, 8, random.Random(3))) == list(drawn)
