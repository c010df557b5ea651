"""The `openai` moderation backend against a second, real Bastion server over HTTP."""

import httpx
from fastapi.testclient import TestClient

from bastion.app import create_app
from tests.conftest import LiveServer

THREAT = "I am going to kill you and your whole family tonight."
WEATHER = "What's the weather like in Paris tomorrow?"


def remote_model(url: str, key: str) -> dict:
    options = {"base_url": f"{url}/v1", "api_key": key, "max_retries": 0, "timeout": 60}
    return {
        "default_model": "remote",
        "preload": False,
        "models": {"remote": {"backends": [{"plugin": "openai", "options": options}]}},
    }


def test_bastion_moderates_through_another_bastion(
    live_server: tuple[LiveServer, str], make_settings, tmp_path
) -> None:
    upstream, upstream_key = live_server
    settings = make_settings(
        auth="off",
        database_url=f"sqlite:///{tmp_path / 'front.db'}",
        moderation=remote_model(upstream.url, upstream_key),
    )
    with TestClient(create_app(settings)) as api:
        proxied = api.post("/v1/moderations", json={"input": [THREAT, WEATHER]})
    assert proxied.status_code == 200, proxied.text
    body = proxied.json()
    assert body["model"] == "remote"
    assert [r["flagged"] for r in body["results"]] == [True, False]
    direct = httpx.post(
        f"{upstream.url}/v1/moderations",
        json={"input": [THREAT, WEATHER]},
        headers={"Authorization": f"Bearer {upstream_key}"},
        timeout=60,
    ).json()
    for via_remote, via_direct in zip(body["results"], direct["results"], strict=True):
        for key, score in via_direct["category_scores"].items():
            assert abs(via_remote["category_scores"][key] - score) < 1e-4


def test_refused_remote_key_is_a_clear_gateway_error(
    live_server: tuple[LiveServer, str], make_settings, tmp_path
) -> None:
    upstream, _key = live_server
    settings = make_settings(
        auth="off",
        database_url=f"sqlite:///{tmp_path / 'front.db'}",
        moderation=remote_model(upstream.url, "bst-wrong-key"),
    )
    with TestClient(create_app(settings)) as api:
        response = api.post("/v1/moderations", json={"input": "hello"})
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["type"] == "api_error"
    assert upstream.url in error["message"] or "key" in error["message"]


def test_unreachable_remote_is_a_clear_gateway_error(make_settings, tmp_path) -> None:
    from tests.conftest import free_port

    url = f"http://127.0.0.1:{free_port()}"
    settings = make_settings(
        auth="off", database_url=f"sqlite:///{tmp_path / 'front.db'}", moderation=remote_model(url, "k")
    )
    with TestClient(create_app(settings)) as api:
        response = api.post("/v1/moderations", json={"input": "hello"})
    assert response.status_code in (502, 504)
    assert response.json()["error"]["type"] == "api_error"
