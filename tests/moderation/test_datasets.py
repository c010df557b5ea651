"""Dataset loaders: known category keys only, sane labels, every category covered, XSTest kept apart."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bastion.core.taxonomy import CATEGORY_KEYS
from bastion.moderation.datasets import (
    SEED_FILES,
    SOURCES,
    LoadedData,
    functional_test_texts,
    load_all,
    load_seed,
    load_xstest,
    make_labels,
    normalise_key,
    seed_path,
)

DATA = Path(os.environ.get("BASTION_DATA_DIR", Path(__file__).resolve().parents[3] / "shared" / "data"))


def test_make_labels_closes_over_parents_and_children() -> None:
    labels = make_labels(pos=["self-harm/intent"], zero=["hate", "sexual"])
    assert labels["self-harm/intent"] == 1 and labels["self-harm"] == 1
    assert labels["hate"] == 0 and labels["hate/threatening"] == 0
    assert labels["sexual/minors"] == 0
    assert labels["violence"] is None
    assert list(labels) == list(CATEGORY_KEYS)


def test_seed_is_marked_team_written_and_minor_items_are_only_requests() -> None:
    rows = load_seed() + load_seed(source="seed-depictions")
    assert len(rows) > 300
    assert all(set(r.labels) == set(CATEGORY_KEYS) for r in rows)
    files = {name: json.loads(seed_path(name).read_text(encoding="utf-8")) for name in SEED_FILES}
    assert all("TEAM-WRITTEN" in raw["note"] for raw in files.values())
    minors = [
        item for raw in files.values() for item in raw["items"] if "sexual/minors" in item.get("pos", [])
    ]
    # Sexual/minors positives are short requests to be flagged, never content.
    assert minors and all(item.get("kind") == "request" and len(item["text"]) < 120 for item in minors)
    thin = ("violence/graphic", "self-harm/instructions", "self-harm/intent", "harassment", "violence")
    for category in thin:
        assert sum(r.labels[category] == 1 for r in rows) >= 15, category


def test_functional_tests_are_never_trained_on() -> None:
    texts = functional_test_texts()
    assert len(texts) >= 50
    seed_keys = {normalise_key(r.text) for name in SEED_FILES for r in load_seed(source=name)}
    assert not any(normalise_key(t) in seed_keys for t in texts)


@pytest.fixture(scope="module")
def loaded() -> LoadedData:
    if not (DATA / "README.md").is_file():
        pytest.fail(f"the public data sets are not at {DATA}; set BASTION_DATA_DIR", pytrace=False)
    return load_all(DATA)


def test_every_source_returns_known_keys_and_binary_labels(loaded: LoadedData) -> None:
    assert set(loaded.files) == {*SOURCES, *SEED_FILES}
    assert all(path.is_file() for files in loaded.files.values() for path in files)
    families = {row.source.split(":")[0] for row in loaded.rows}
    assert families == {*SOURCES, *SEED_FILES}
    for row in loaded.rows:
        assert list(row.labels) == list(CATEGORY_KEYS)
        assert all(v in (0, 1, None) for v in row.labels.values())
        assert any(v is not None for v in row.labels.values())
        assert isinstance(row.text, str) and row.text


def test_load_all_dedupes_covers_every_category_and_excludes_xstest(loaded: LoadedData) -> None:
    keys = [normalise_key(r.text) for r in loaded.rows]
    assert len(keys) == len(set(keys))
    for category in CATEGORY_KEYS:
        assert any(r.labels[category] == 1 for r in loaded.rows), f"no positives for {category}"
        assert any(r.labels[category] == 0 for r in loaded.rows), f"no negatives for {category}"
    xs_texts, xs_labels, _ = load_xstest(DATA)
    assert len(xs_texts) == 450 and sum(xs_labels) == 200
    train_keys = set(keys)
    assert not any(normalise_key(t) in train_keys for t in xs_texts)
    assert not any(normalise_key(t) in train_keys for t in functional_test_texts())
    # Masking: a hate-only source says nothing about self-harm.
    stormfront = [r for r in loaded.rows if r.source == "stormfront"]
    assert stormfront and all(r.labels["self-harm"] is None for r in stormfront)


def test_everyday_assistant_traffic_is_benign_and_the_test_source_is_kept_apart(loaded: LoadedData) -> None:
    from bastion.moderation.train import TrainSpec, is_test_source

    by_source: dict[str, list[str]] = {}
    for row in loaded.rows:
        by_source.setdefault(row.source, []).append(row.text)
    oasst = [r for r in loaded.rows if r.source == "benign:oasst"]
    pandalm = [r for r in loaded.rows if r.source == "benign:pandalm"]
    # Replies as well as prompts: far more messages than the 100 trees.
    assert len(oasst) > 500 and len(pandalm) > 500
    assert all(v == 0 for r in oasst + pandalm for v in r.labels.values())
    spec = TrainSpec()
    assert is_test_source("benign:oasst", spec) and not is_test_source("benign:pandalm", spec)
    everyday = load_seed(source="seed-everyday")
    assert len(everyday) >= 300 and all(v == 0 for r in everyday for v in r.labels.values())
    test_keys = {normalise_key(r.text) for r in oasst}
    assert not any(normalise_key(r.text) in test_keys for r in everyday)


def test_the_stance_file_is_optional_labelled_and_loaded_only_by_name() -> None:
    from bastion.core.errors import ConfigError
    from bastion.moderation.datasets import OPTIONAL_SEED_FILES, default_sources, load_source, with_sources

    assert "seed-stance" in OPTIONAL_SEED_FILES and "seed-stance" not in default_sources()
    rows, files = load_source("seed-stance", DATA)
    assert files == [seed_path("seed-stance")] and len(rows) >= 200
    hateful = [r for r in rows if r.labels["hate"] == 1]
    benign = [r for r in rows if all(v == 0 for v in r.labels.values())]
    assert len(hateful) >= 80 and len(benign) >= 80 and len(hateful) + len(benign) == len(rows)
    assert all(r.labels["sexual"] == 0 and r.labels["self-harm"] == 0 for r in hateful)
    kinds = {item["kind"] for item in json.loads(seed_path("seed-stance").read_text())["items"]}
    assert kinds == {"counter-speech", "negation", "negated positive", "derogation", "stance pair"}
    assert with_sources([]) is None
    extended = with_sources(["seed-stance", "seed-stance"])
    assert extended is not None and extended[-1] == "seed-stance" and extended.count("seed-stance") == 1
    assert extended[:-1] == default_sources()
    with pytest.raises(ConfigError, match="unknown data source 'nope'"):
        with_sources(["nope"])
