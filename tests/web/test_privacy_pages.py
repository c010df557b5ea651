"""The "Your data" page (opt-out toggle, conversations, view, delete, export) and the safety reviewers'
retention queue, in a real headless Chromium against a real server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import select

from bastion.app import create_app
from bastion.auth.keys import KeyStore, Role
from bastion.core.settings import load_settings
from bastion.db.session import Database
from bastion.db.tables import AuditEventRow
from tests.conftest import LiveServer
from tests.gateway.helpers import ECHO_MODELS, TEST_MODERATION

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@dataclass
class Server:
    url: str
    app: Any
    db: Database
    keys: KeyStore

    def chat(self, key: str, content: str) -> None:
        response = httpx.post(
            self.url + "/v1/chat/completions",
            json={"model": "echo", "messages": [{"role": "user", "content": content}]},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        self.app.state.privacy.flush()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("privacy-pages")
    db = Database(f"sqlite:///{home / 'privacy.db'}")
    db.upgrade()
    settings = load_settings(
        database_url=db.url, moderation=TEST_MODERATION, llm=ECHO_MODELS, privacy={"purge_interval_s": 0}
    )
    app = create_app(settings, database=db)
    with LiveServer(app) as live:
        yield Server(live.url, app, db, KeyStore(db, app.state.privacy.audit))
    db.dispose()


def _page(browser: Browser, url: str, key: str) -> tuple[Page, list[str], Any]:
    context = browser.new_context(viewport={"width": 1100, "height": 900}, accept_downloads=True)
    context.set_default_timeout(20_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(url)
    page.get_by_test_id("api-key").fill(key)
    page.get_by_test_id("api-key").dispatch_event("change")
    return page, errors, context


def test_your_data_page_toggles_opt_out_views_deletes_and_exports(browser: Browser, server: Server) -> None:
    key, info = server.keys.create(Role.CLIENT, "page user")
    server.chat(key, "first chat about otters")
    server.chat(key, "second chat about herons")
    page, errors, context = _page(browser, server.url + "/privacy", key)
    expect(page).to_have_title("Bastion · Your data")
    expect(page.get_by_test_id("who")).to_contain_text(info.user_id or "")
    expect(page.get_by_test_id("conversation")).to_have_count(2)
    expect(page.get_by_label("Do not use my conversations for training")).not_to_be_checked()

    page.get_by_label("Do not use my conversations for training").check()
    expect(page.get_by_test_id("opt-out-status")).to_have_text("Opted out of training.")
    state = httpx.get(
        server.url + "/v1/me/training-opt-out", headers={"Authorization": f"Bearer {key}"}, timeout=30
    ).json()
    assert state["opt_out"] is True

    herons = page.get_by_test_id("conversation").first  # newest first
    herons.get_by_test_id("view-button").click()
    expect(page.get_by_test_id("viewer-message").first).to_have_text("second chat about herons")
    herons.get_by_test_id("delete-button").click()
    expect(page.get_by_test_id("conversation")).to_have_count(1)
    expect(page.get_by_test_id("viewer")).to_be_hidden()

    with page.expect_download() as download_info:
        page.get_by_test_id("export-button").click()
    archive = json.loads(download_info.value.path().read_text(encoding="utf-8"))
    assert [c["messages"][0]["content"] for c in archive["conversations"]] == ["first chat about otters"]
    assert archive["training_opt_out"]["opt_out"] is True
    expect(page.get_by_test_id("export-status")).to_contain_text("Exported 1 conversation(s)")
    context.close()
    assert not errors, errors


def test_review_page_lists_the_retention_queue_and_audits_each_read(browser: Browser, server: Server) -> None:
    owner, _ = server.keys.create(Role.CLIENT, "owner")
    server.chat(owner, "deleted chat about lynxes")
    headers = {"Authorization": f"Bearer {owner}"}
    (conversation,) = httpx.get(server.url + "/v1/conversations", headers=headers, timeout=30).json()["data"]
    httpx.delete(server.url + f"/v1/conversations/{conversation['id']}", headers=headers, timeout=30)

    admin, _ = server.keys.create(Role.ADMIN, "admin")
    page, errors, context = _page(browser, server.url + "/review", admin)
    expect(page.get_by_test_id("error-message")).to_contain_text("safety_reviewer")  # not even admin
    context.close()

    reviewer, _ = server.keys.create(Role.SAFETY_REVIEWER, "reviewer")
    page, errors, context = _page(browser, server.url + "/review", reviewer)
    expect(page).to_have_title("Bastion · Safety review")
    item = page.locator(f"[data-testid=queue-item][data-id={conversation['id']}]")
    expect(item).to_be_visible()
    expect(page.get_by_test_id("queue-lede")).to_contain_text("30 days")
    item.get_by_test_id("read-button").click()
    expect(page.get_by_test_id("viewer-message").first).to_have_text("deleted chat about lynxes")
    with server.db.session() as session:
        reads = session.scalars(
            select(AuditEventRow).where(AuditEventRow.action == "conversation.review_read")
        ).all()
    assert len(reads) == 1 and reads[0].actor == server.keys.authenticate(reviewer).key_id
    context.close()
    assert not errors, errors
