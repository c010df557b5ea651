from bastion.auth.keys import Role
from tests.conftest import ApiClient


def test_moderation_needs_a_key(client: ApiClient) -> None:
    response = client.post("/v1/moderations", json={"input": "hi"}, headers={"Authorization": ""})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    bad = client.post("/v1/moderations", json={"input": "hi"}, headers=client.auth("bst-wrong"))
    assert bad.status_code == 401
    assert bad.json()["error"]["code"] == "invalid_api_key"


def test_every_role_may_moderate(client: ApiClient) -> None:
    for role in Role:
        response = client.post(
            "/v1/moderations", json={"input": "hi"}, headers=client.auth(client.key_for(role))
        )
        assert response.status_code == 200, role


def test_only_admins_manage_keys(client: ApiClient) -> None:
    created = client.post("/v1/keys", json={"role": "annotator", "name": "ann"})
    assert created.status_code == 201
    body = created.json()
    assert body["key"].startswith("bst-") and body["role"] == "annotator"
    annotator = client.auth(body["key"])
    denied = client.get("/v1/keys", headers=annotator)
    assert denied.status_code == 403
    assert denied.json()["error"]["type"] == "permission_error"
    listed = client.get("/v1/keys").json()
    assert body["id"] in {k["id"] for k in listed}
    assert all("key" not in k and "key_hash" not in k for k in listed)
    assert client.post("/v1/moderations", json={"input": "x"}, headers=annotator).status_code == 200
    promoted = client.patch(f"/v1/keys/{body['id']}", json={"role": "admin"})
    assert promoted.status_code == 200
    assert client.get("/v1/keys", headers=annotator).status_code == 200  # the new role, at once
    assert client.patch(f"/v1/keys/{body['id']}", json={"role": "annotator"}).status_code == 200
    assert client.get("/v1/keys", headers=annotator).status_code == 403
    assert client.delete(f"/v1/keys/{body['id']}").status_code == 200
    assert client.post("/v1/moderations", json={"input": "x"}, headers=annotator).status_code == 401
    assert client.delete("/v1/keys/key_nope").status_code == 404
    assert client.post("/v1/keys", json={"role": "emperor"}).status_code == 400


def test_auth_off_admits_without_key(make_settings, database, embedded_service) -> None:
    from fastapi.testclient import TestClient

    from bastion.app import create_app

    app = create_app(
        make_settings(auth="off", moderation={"preload": False}),
        database=database,
        moderation=embedded_service,
    )
    with TestClient(app) as api:
        assert api.post("/v1/moderations", json={"input": "hello"}).status_code == 200
