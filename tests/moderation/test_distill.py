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


def test_a_missing_start_encoder_is_a_config_error(student: tuple[Path, dict], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot load the encoder"):
        distill_encoder(
            load_settings(),
            tmp_path / "x",
            spec=DistillSpec(max_texts=8, task_weight=1.0, start_from=str(tmp_path / "missing")),
            sources=["seed"],
        )
