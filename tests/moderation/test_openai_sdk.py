"""The official `openai` SDK, pointed at a real Bastion server, parses every answer as it would OpenAI's."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from openai.types import ModerationTextInputParam

from bastion.core.taxonomy import CATEGORY_KEYS
from tests.conftest import LiveServer

pytestmark = pytest.mark.slow

THREAT = "I am going to kill you and your whole family tonight."
WEATHER = "What's the weather like in Paris tomorrow?"
DEFAULT_MODEL = "bastion-embedded"


@pytest.fixture
def sdk(live_server: tuple[LiveServer, str]) -> Iterator[openai.OpenAI]:
    """An OpenAI client for the live server, with the admin key and no retries."""
    server, admin_key = live_server
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=admin_key, max_retries=0, timeout=60) as client:
        yield client


def assert_complete(result: openai.types.Moderation) -> None:
    """Every category is present in all three maps, under OpenAI's names."""
    scores = result.category_scores.model_dump(by_alias=True)
    assert set(scores) == set(CATEGORY_KEYS)
    assert all(0.0 <= s <= 1.0 for s in scores.values())
    assert set(result.categories.model_dump(by_alias=True)) == set(CATEGORY_KEYS)
    applied = result.category_applied_input_types
    assert applied is not None
    assert set(applied.model_dump(by_alias=True)) == set(CATEGORY_KEYS)
    assert result.flagged == any(result.categories.model_dump().values())


def test_string_input(sdk: openai.OpenAI) -> None:
    response = sdk.moderations.create(model="omni-moderation-latest", input=THREAT)
    assert isinstance(response, openai.types.ModerationCreateResponse)
    assert response.id.startswith("modr-")
    assert response.model == DEFAULT_MODEL  # the alias resolved to the configured model
    assert len(response.results) == 1
    result = response.results[0]
    assert_complete(result)
    assert result.flagged is True
    # Attribute access, including the aliased sub-categories.
    assert isinstance(result.categories.violence, bool)
    assert isinstance(result.categories.harassment_threatening, bool)
    assert isinstance(result.category_scores.violence, float)
    assert (
        result.categories.violence or result.categories.harassment or result.categories.harassment_threatening
    )


def test_list_of_strings_keeps_order(sdk: openai.OpenAI) -> None:
    texts = [WEATHER, THREAT, WEATHER]
    response = sdk.moderations.create(model="omni-moderation-latest", input=texts)
    assert response.model == DEFAULT_MODEL
    assert [r.flagged for r in response.results] == [False, True, False]
    for result in response.results:
        assert_complete(result)
    assert response.results[1].category_scores.violence > response.results[0].category_scores.violence


def test_list_of_text_parts(sdk: openai.OpenAI) -> None:
    response = sdk.moderations.create(
        model="omni-moderation-latest",
        input=[ModerationTextInputParam(type="text", text=t) for t in (THREAT, WEATHER)],
    )
    assert response.model == DEFAULT_MODEL
    assert [r.flagged for r in response.results] == [True, False]
    plain = sdk.moderations.create(model=DEFAULT_MODEL, input=[THREAT, WEATHER])
    for part, text in zip(response.results, plain.results, strict=True):
        assert part.category_scores.model_dump() == pytest.approx(text.category_scores.model_dump(), abs=1e-5)


def test_default_model_when_named_directly(sdk: openai.OpenAI) -> None:
    response = sdk.moderations.create(model=DEFAULT_MODEL, input=WEATHER)
    assert response.model == DEFAULT_MODEL
    assert response.results[0].flagged is False


def test_unknown_model_is_not_found(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.moderations.create(model="no-such-moderation-model", input=WEATHER)
    assert caught.value.status_code == 404
    assert caught.value.code == "model_not_found"
    assert "no-such-moderation-model" in caught.value.message


def test_bad_key_is_an_authentication_error(live_server: tuple[LiveServer, str]) -> None:
    server, _admin_key = live_server
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="bst-wrong", max_retries=0)
    with client, pytest.raises(openai.AuthenticationError) as caught:
        client.moderations.create(model="omni-moderation-latest", input=WEATHER)
    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"
