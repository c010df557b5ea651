"""Values the database cannot store are a 400 in the error envelope, never a 500."""

from __future__ import annotations

from tests.conftest import ApiClient


def test_nul_in_names_is_a_400(client: ApiClient) -> None:
    for path, body in (
        ("/v1/organizations", {"name": "\x00"}),
        ("/v1/users", {"name": "a\x00b"}),
        ("/v1/keys", {"role": "client", "name": "\x00"}),
    ):
        answer = client.post(path, json=body)
        assert answer.status_code == 400, (path, answer.text)
        assert "NUL" in answer.json()["error"]["message"]


def test_nul_in_a_query_value_is_a_400_not_a_500(client: ApiClient) -> None:
    # End-user ids are stored as keyed hashes, so any character is fine: an empty list, not an error.
    answer = client.get("/v1/conversations", params={"user": "\x00"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"] == []
