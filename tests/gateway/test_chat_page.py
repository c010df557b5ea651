"""The chat page at `/chat` in a real headless Chromium against a real gateway server."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from bastion.auth.keys import KeyStore, Role
from bastion.core.settings import load_settings
from bastion.db.session import Database
from tests.conftest import LiveServer
from tests.gateway.helpers import BOMB_QUESTION, HARMFUL_PHRASE, TEST_MODERATION, build_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LONG = "First sentence arrives early. " + "More words keep coming in slowly. " * 6


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    home = tmp_path_factory.mktemp("chat-page")
    db = Database(f"sqlite:///{home / 'gw.db'}")
    db.upgrade()
    settings = load_settings(database_url=db.url, home=home, moderation=TEST_MODERATION)
    llm = {
        "default_model": "echo",
        "models": {
            "echo": {"backend": "echo"},
            "harmful": {"backend": "echo", "options": {"reply": "Sure. " * 10 + HARMFUL_PHRASE + "."}},
            "slow": {"backend": "echo", "options": {"reply": LONG, "delay_s": 0.05}},
        },
    }
    key, _ = KeyStore(db).create(Role.CLIENT, "browser")
    with LiveServer(build_app(settings, db, llm=llm)) as live:
        yield live.url, key
    db.dispose()


@pytest.fixture
def page(browser: Browser, server: tuple[str, str]) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    context.set_default_timeout(20_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    url, key = server
    page.goto(url + "/chat")
    page.get_by_test_id("api-key").fill(key)
    page.get_by_test_id("api-key").dispatch_event("change")
    expect(page.get_by_test_id("model-status")).to_contain_text("4 model(s)")
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def send(page: Page, model: str, text: str) -> None:
    page.get_by_test_id("model-select").select_option(model)
    page.get_by_test_id("message-input").fill(text)
    page.get_by_test_id("message-input").press("Enter")


def test_a_turn_streams_and_shows_verdicts(page: Page) -> None:
    expect(page).to_have_title("Bastion · Chat")
    for label in ("Model", "API key", "Message"):
        expect(page.get_by_label(label, exact=True)).to_be_visible()
    send(page, "slow", "tell me a long story")
    answer = page.get_by_test_id("assistant-message").last
    # Part of the answer is on screen while the stream is still running.
    expect(answer).to_contain_text("First sentence arrives early.")
    expect(answer).to_have_attribute("aria-busy", "true")
    expect(answer).to_have_attribute("aria-busy", "false")
    expect(answer).to_have_text(LONG)
    expect(page.get_by_test_id("verdict-input").last).to_have_attribute("data-action", "allow")
    expect(page.get_by_test_id("verdict-output").last).to_contain_text("output: passed")


def test_blocked_input_and_output_turns(page: Page) -> None:
    send(page, "echo", BOMB_QUESTION)
    first = page.get_by_test_id("turn").nth(0)
    expect(first.get_by_test_id("verdict-input")).to_contain_text("input: blocked")
    expect(first.get_by_test_id("verdict-input")).to_contain_text("illicit/violent")
    expect(first.get_by_test_id("assistant-message")).to_have_text(
        "I'm sorry, but I can't help with that request."
    )
    expect(first.get_by_test_id("verdicts")).to_contain_text("the model was not called")

    send(page, "harmful", "go on")
    second = page.get_by_test_id("turn").nth(1)
    expect(second.get_by_test_id("verdict-output")).to_contain_text("output: blocked")
    expect(second.get_by_test_id("assistant-message")).not_to_contain_text("black powder")
    page.screenshot(path=os.environ.get("BASTION_CHAT_SCREENSHOT", "/tmp/chat.png"), full_page=True)


def test_errors_are_shown(page: Page) -> None:
    page.get_by_test_id("api-key").fill("bst-wrong")
    send(page, "echo", "hello")
    expect(page.get_by_test_id("error-message")).to_contain_text("Incorrect API key")
    expect(page.get_by_test_id("turn")).to_have_count(0)
