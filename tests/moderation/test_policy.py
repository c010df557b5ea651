from bastion.core.taxonomy import CATEGORIES, CATEGORY_KEYS
from bastion.moderation.backends.base import BackendScores
from bastion.moderation.policy import combine
from tests.moderation.verdicts import threat_verdict

HALF = dict.fromkeys(CATEGORY_KEYS, 0.5)


def test_max_over_backends_and_every_key_present() -> None:
    result = combine(
        "t", [BackendScores({"hate": 0.2}), BackendScores({"hate": 0.7, "sexual": 0.1})], [HALF, HALF], {}
    )
    assert set(result.category_scores) == set(CATEGORY_KEYS)
    assert result.category_scores["hate"] == 0.7
    assert result.categories["hate"] and result.flagged
    assert not result.categories["sexual"]
    assert all(v == ["text"] for v in result.category_applied_input_types.values())


def test_each_backend_uses_its_own_threshold() -> None:
    strict = {**HALF, "violence": 0.9}
    result = combine("t", [BackendScores({"violence": 0.8})], [strict], {})
    assert not result.categories["violence"]
    result = combine("t", [BackendScores({"violence": 0.8}), BackendScores({})], [strict, HALF], {})
    assert not result.flagged


def test_policy_threshold_overrides() -> None:
    result = combine("t", [BackendScores({"violence": 0.3})], [HALF], {"violence": 0.25})
    assert result.categories["violence"]
    result = combine("t", [BackendScores({"violence": 0.8})], [HALF], {"violence": 0.95})
    assert not result.categories["violence"]


def test_subcategory_implies_parent() -> None:
    result = combine("t", [BackendScores({"hate/threatening": 0.9, "hate": 0.1})], [HALF], {})
    assert result.category_scores["hate"] == 0.9
    assert result.categories["hate"] and result.categories["hate/threatening"]


def test_allow_list_clears_flag() -> None:
    result = combine(
        "t",
        [BackendScores({"sexual": 0.99}), BackendScores({}, allowed=frozenset({"sexual"}))],
        [HALF, HALF],
        {},
    )
    assert not result.categories["sexual"]
    assert result.category_scores["sexual"] == 0.99


def test_nan_and_out_of_range_scores_are_clipped() -> None:
    result = combine("t", [BackendScores({"hate": float("nan"), "sexual": 3.0, "violence": -1})], [HALF], {})
    assert result.category_scores["hate"] == 0.0
    assert result.category_scores["sexual"] == 1.0
    assert result.category_scores["violence"] == 0.0


def test_explanations_only_for_flagged() -> None:
    text = "you idiot, nice day"
    result = combine(
        text,
        [BackendScores({"harassment": 0.9}, spans={"harassment": [(4, 9)], "hate": [(0, 3)]})],
        [HALF],
        {},
        explain=True,
    )
    assert result.explanations is not None
    assert set(result.explanations) == {"harassment"}
    assert result.explanations["harassment"][0].text == "idiot"


def test_a_parent_flagged_through_its_subcategory_is_explained_by_it() -> None:
    result = threat_verdict()
    assert result.categories["harassment"] and result.explanations is not None
    assert [s.text for s in result.explanations["harassment"]] == ["I will hurt you."]
    own = threat_verdict(harassment=0.6, own_spans=True)
    assert own.explanations is not None and [s.text for s in own.explanations["harassment"]] == [
        "Nice recipe."
    ]


def test_backend_flags_replace_its_thresholds() -> None:
    remote = BackendScores({"hate": 0.3, "sexual": 0.9}, flags={"hate": True, "sexual": False})
    result = combine("t", [remote], [HALF], {})
    assert result.categories["hate"]
    assert not result.categories["sexual"]


def test_overlapping_spans_from_several_backends_are_joined() -> None:
    text = "I am going to kill you tonight"
    result = combine(
        text,
        [
            BackendScores({"violence": 0.9}, spans={"violence": [(14, 18)]}),
            BackendScores({"violence": 0.8}, spans={"violence": [(0, 22), (23, 30)]}),
        ],
        [HALF, HALF],
        {},
        explain=True,
    )
    assert result.explanations is not None
    assert [s.text for s in result.explanations["violence"]] == ["I am going to kill you", "tonight"]


def test_a_verdict_flags_what_some_backend_flags_on_its_own() -> None:
    import random

    from bastion.moderation.policy import backend_flags

    rng = random.Random(0)
    for _ in range(200):
        backends = [
            BackendScores(
                {
                    k: rng.choice([rng.random(), float("nan"), 1.5, -0.2])
                    for k in CATEGORY_KEYS
                    if rng.random() < 0.7
                },
                flags={k: rng.random() < 0.3 for k in CATEGORY_KEYS} if rng.random() < 0.3 else None,
            )
            for _ in range(3)
        ]
        limits = [{k: rng.random() for k in CATEGORY_KEYS} for _ in backends]
        result = combine("t", backends, limits, {})
        own = {
            key for found, limit in zip(backends, limits, strict=True) for key in backend_flags(found, limit)
        }
        expected = own | {c.parent for c in CATEGORIES if c.parent is not None and c.key in own}
        assert set(result.flagged_categories) == expected
