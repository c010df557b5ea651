"""`POST /v1/moderations`: OpenAI's contract, and no input can produce a 5xx."""

import json

import pytest

from bastion.core.taxonomy import CATEGORY_KEYS
from tests.conftest import ApiClient

THREAT = "I am going to kill you and your whole family tonight."
WEATHER = "What's the weather like in Paris tomorrow?"


def assert_envelope(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    return error


def test_openai_shape_and_verdicts(client: ApiClient) -> None:
    response = client.post("/v1/moderations", json={"input": [THREAT, WEATHER]})
    assert response.status_code == 200
    body = response.json()
    assert body["id"].startswith("modr-")
    assert body["model"] == "bastion-embedded"
    assert len(body["results"]) == 2
    for result in body["results"]:
        assert set(result) == {"flagged", "categories", "category_scores", "category_applied_input_types"}
        for field in ("categories", "category_scores", "category_applied_input_types"):
            assert list(result[field]) == list(CATEGORY_KEYS)
        assert all(0.0 <= s <= 1.0 for s in result["category_scores"].values())
    threat, weather = body["results"]
    assert threat["flagged"] is True
    assert weather["flagged"] is False


def test_input_forms_agree(client: ApiClient) -> None:
    as_string = client.post("/v1/moderations", json={"input": THREAT}).json()["results"]
    as_list = client.post("/v1/moderations", json={"input": [THREAT]}).json()["results"]
    as_parts = client.post("/v1/moderations", json={"input": [{"type": "text", "text": THREAT}]}).json()[
        "results"
    ]
    assert as_string[0]["category_scores"] == pytest.approx(as_list[0]["category_scores"], abs=1e-5)
    assert as_parts[0]["category_scores"] == pytest.approx(as_list[0]["category_scores"], abs=1e-5)


def test_results_keep_input_order(client: ApiClient) -> None:
    texts = [WEATHER, THREAT, WEATHER, THREAT]
    results = client.post("/v1/moderations", json={"input": texts}).json()["results"]
    assert [r["flagged"] for r in results] == [False, True, False, True]


def test_model_aliases_and_unknown_model(client: ApiClient) -> None:
    body = client.post("/v1/moderations", json={"input": "hi", "model": "omni-moderation-latest"}).json()
    assert body["model"] == "bastion-embedded"
    lists_only = client.post("/v1/moderations", json={"input": "hi", "model": "bastion-lists"}).json()
    assert lists_only["model"] == "bastion-lists"
    error = assert_envelope(
        client.post("/v1/moderations", json={"input": "hi", "model": "gpt-nope"}), 404, "model_not_found"
    )
    assert error["param"] == "model"
    models = client.get("/v1/moderations/models").json()
    assert {m["id"] for m in models} >= {"bastion-embedded", "bastion-lists"}
    assert [m["id"] for m in models if m["default"]] == ["bastion-embedded"]


def test_model_card_of_the_shipped_model(client: ApiClient) -> None:
    body = client.get("/v1/moderations/models/omni-moderation-latest/card").json()
    assert body["model"] == "bastion-embedded"
    embedded, profanity, lists = body["backends"]
    assert [b["backend"] for b in body["backends"]] == ["embedded", "profanity", "lists"]
    assert lists == {"backend": "lists", "card": None, "markdown": None, "html": None}
    assert profanity["card"]["category"] == "harassment" and "<table>" in profanity["html"]
    card = embedded["card"]
    assert set(card["thresholds"]) == set(CATEGORY_KEYS)
    auprc = card["metrics"]["test_sources"]["any"]["auprc"]
    assert f"{auprc:.3f}" in embedded["markdown"]
    html = embedded["html"]
    assert html.startswith("<h1>Bastion embedded moderation model</h1>") and "<table>" in html
    assert f"<td>{card['thresholds']['harassment']:.3f}</td>" in html
    assert "<script" not in html
    error = assert_envelope(client.get("/v1/moderations/models/gpt-nope/card"), 404, "model_not_found")
    assert error["param"] == "model"


def test_long_input_is_chunked_not_truncated(client: ApiClient) -> None:
    padding = " ".join(["The committee reviewed the quarterly budget and approved the garden plans."] * 300)
    results = client.post("/v1/moderations", json={"input": [padding, padding + " " + THREAT]}).json()[
        "results"
    ]
    assert results[0]["flagged"] is False
    assert results[1]["flagged"] is True


def test_image_parts_are_refused(client: ApiClient) -> None:
    parts = [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]
    error = assert_envelope(
        client.post("/v1/moderations", json={"input": parts}), 400, "unsupported_input_type"
    )
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "input.1"


@pytest.mark.parametrize(
    "body, status",
    [
        (b"{not json", 400),
        (b"", 400),
        (b"[]", 400),
        (b'"just a string"', 400),
        (b"{}", 400),
        (b'{"input": null}', 400),
        (b'{"input": 42}', 400),
        (b'{"input": [1, 2]}', 400),
        (b'{"input": [{"type": "text"}]}', 400),
        (b'{"input": [{"type": "audio", "text": "x"}]}', 400),
        (b'{"input": []}', 400),
        (b'{"input": "x", "model": 5}', 400),
        (b'{"input": {"text": "x"}}', 400),
    ],
)
def test_malformed_bodies_get_400_envelopes(client: ApiClient, body: bytes, status: int) -> None:
    response = client.post("/v1/moderations", content=body, headers={"content-type": "application/json"})
    assert_envelope(response, status)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "\x00\x00",
        "nul\x00inside",
        "\u200b\u200b",
        "🙂" * 500,
        "a" * 50_000,
        "\ufeff",
        "\U0010ffff",
    ],
)
def test_odd_strings_are_scored(client: ApiClient, text: str) -> None:
    response = client.post("/v1/moderations", json={"input": text})
    assert response.status_code == 200, response.text
    assert len(response.json()["results"]) == 1


def test_lone_surrogates_are_scored(client: ApiClient) -> None:
    body = b'{"input": ["\\ud800 alone", "\\udfff", "pair \\ud83d\\ude00 ok"]}'
    response = client.post("/v1/moderations", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert len(response.json()["results"]) == 3


def test_limits(client: ApiClient) -> None:
    limits = client.app.state.settings.moderation.limits
    many = assert_envelope(
        client.post("/v1/moderations", json={"input": ["x"] * 10_000}), 400, "too_many_items"
    )
    assert str(limits.max_items) in many["message"]
    assert_envelope(client.post("/v1/moderations", json={"input": "a" * 1_000_000}), 413, "payload_too_large")
    huge = json.dumps({"input": "b" * (limits.max_body_bytes + 10)}).encode()
    assert_envelope(
        client.post("/v1/moderations", content=huge, headers={"content-type": "application/json"}),
        413,
        "payload_too_large",
    )


def test_wrong_method_and_route(client: ApiClient) -> None:
    assert_envelope(client.get("/v1/moderations"), 405)
    assert_envelope(client.post("/v1/nothing-here", json={}), 404)


def test_explain_returns_spans_for_flagged_categories(client: ApiClient) -> None:
    body = client.post("/v1/moderations", json={"input": [THREAT, WEATHER], "explain": True}).json()
    threat, weather = body["results"]
    assert set(threat["explanations"]) == {k for k, v in threat["categories"].items() if v}
    for spans in threat["explanations"].values():
        for span in spans:
            assert THREAT[span["start"] : span["end"]] == span["text"]
    assert weather["explanations"] == {}
    plain = client.post("/v1/moderations", json={"input": THREAT}).json()["results"][0]
    assert "explanations" not in plain
