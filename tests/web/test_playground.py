"""The moderation playground at `/`, driven by a real headless Chromium against a real server.

Playwright's sync API runs its own event loop in the calling thread; pytest runs no loop in the main
thread and uvicorn serves from its own thread (`LiveServer`), so the three never share a loop.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SCREENSHOT = Path(os.environ.get("BASTION_PLAYGROUND_SCREENSHOT", "/tmp/playground.png"))
THREAT = "I am going to kill you and your whole family tonight"
WEATHER = "What's the weather like in Paris tomorrow?"
INSULT = "Thanks for the help yesterday, you stupid idiot."
VIOLENT_CATEGORIES = {"violence", "harassment", "harassment/threatening", "violence/graphic"}
TIMEOUT_MS = 30_000


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context (empty local storage) and page."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    console_errors: list[str] = []
    page.on("pageerror", lambda exc: console_errors.append(str(exc)))
    yield page
    context.close()
    assert not console_errors, f"JavaScript errors on the page: {console_errors}"


def moderate(page: Page, text: str) -> None:
    """Type `text`, click Moderate and wait until the request has finished."""
    page.get_by_test_id("text-input").fill(text)
    with page.expect_response(lambda r: r.url.endswith("/v1/moderations")):
        page.get_by_test_id("moderate-button").click()
    expect(page.get_by_test_id("moderate-button")).to_be_enabled()


def test_playground_flags_a_threat_and_passes_a_question(
    page: Page, live_server: tuple[LiveServer, str]
) -> None:
    server, admin_key = live_server
    page.goto(server.url + "/")
    expect(page).to_have_title("Bastion · Moderation playground")
    # Accessible labels on every control.
    for label in ("Text", "Model", "API key"):
        expect(page.get_by_label(label, exact=True)).to_be_visible()

    page.get_by_label("API key", exact=True).fill(admin_key)
    page.get_by_label("API key", exact=True).blur()
    # The key unlocks the model list; the default model is pre-selected.
    expect(page.get_by_test_id("model-select").locator("option")).not_to_have_count(1)
    expect(page.get_by_test_id("model-select")).to_have_value("bastion-embedded")
    assert page.evaluate("localStorage.getItem('bastion.apiKey')") == admin_key

    moderate(page, THREAT)
    expect(page.get_by_test_id("error")).to_be_hidden()
    verdict = page.get_by_test_id("verdict")
    expect(verdict).to_have_text("FLAGGED")
    expect(verdict).to_have_attribute("data-flagged", "true")
    rows = page.get_by_test_id("category-row")
    expect(rows).to_have_count(13)
    flagged = set(
        page.locator("[data-testid=category-row][data-flagged=true]").evaluate_all(
            "rows => rows.map(r => r.dataset.category)"
        )
    )
    assert flagged & VIOLENT_CATEGORIES, f"no violence/harassment bar flagged: {flagged}"
    # Every bar shows its score as a percentage.
    scores = page.get_by_test_id("category-score").all_inner_texts()
    assert len(scores) == 13 and all(s.endswith("%") for s in scores), scores
    # Explanations are on by default: the text is shown with its spans marked.
    expect(page.get_by_test_id("highlighted-text")).to_contain_text("kill")
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    moderate(page, WEATHER)
    expect(verdict).to_have_text("Not flagged")
    expect(verdict).to_have_attribute("data-flagged", "false")
    expect(page.locator("[data-testid=category-row][data-flagged=true]")).to_have_count(0)
    expect(page.get_by_test_id("highlight")).to_have_count(0)

    # Highlights mark the words behind a flag, not the whole sentence.
    moderate(page, INSULT)
    expect(verdict).to_have_text("FLAGGED")
    marked = " ".join(page.get_by_test_id("highlight").all_inner_texts())
    assert "idiot" in marked and "Thanks" not in marked and "yesterday" not in marked, marked

    # Ctrl+Enter submits too.
    page.get_by_test_id("text-input").fill(THREAT)
    with page.expect_response(lambda r: r.url.endswith("/v1/moderations")):
        page.get_by_test_id("text-input").press("Control+Enter")
    expect(verdict).to_have_text("FLAGGED")


def test_playground_shows_api_errors(page: Page, live_server: tuple[LiveServer, str]) -> None:
    server, _admin_key = live_server
    page.goto(server.url + "/")
    # Without a key the model list says what is missing instead of failing silently.
    expect(page.get_by_test_id("model-status")).to_contain_text("API key")

    page.get_by_label("API key", exact=True).fill("bst-not-a-real-key")
    moderate(page, THREAT)
    error = page.get_by_test_id("error")
    expect(error).to_be_visible()
    expect(page.get_by_test_id("error-message")).to_contain_text("Incorrect API key")
    expect(page.get_by_test_id("error-meta")).to_contain_text("401")
    expect(page.get_by_test_id("result")).to_be_hidden()


def test_model_card_panel_shows_the_selected_models_card(
    page: Page, live_server: tuple[LiveServer, str]
) -> None:
    server, admin_key = live_server
    page.goto(server.url + "/")
    page.get_by_label("API key", exact=True).fill(admin_key)
    page.get_by_label("API key", exact=True).blur()
    expect(page.get_by_test_id("model-select")).to_have_value("bastion-embedded")
    body = page.get_by_test_id("card-body")
    expect(body).to_be_hidden()  # closed until asked for
    with page.expect_response(lambda r: r.url.endswith("/v1/moderations/models/bastion-embedded/card")):
        page.get_by_text("Model card", exact=True).click()
    card = body.locator("article[data-backend=embedded]")
    expect(card.get_by_role("heading", name="Bastion embedded moderation model")).to_be_visible()
    expect(card.get_by_role("heading", name="XSTest (never trained or tuned on)")).to_be_visible()
    expect(card.locator("table").first.locator("tbody tr")).to_have_count(14)  # 13 categories and any
    status = page.get_by_test_id("card-status")
    expect(status).to_have_text("bastion-embedded · no card for its lists backend")
    page.screenshot(path=str(SCREENSHOT.with_name("playground-card.png")), full_page=True)

    page.get_by_test_id("model-select").select_option("bastion-lists")
    expect(status).to_have_text("bastion-lists has no model card (its backends: lists).")
    expect(body.locator("article")).to_have_count(0)
