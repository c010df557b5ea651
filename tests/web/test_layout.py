"""Every page shares one layout: its title, the top bar, and links to every other page."""

from __future__ import annotations

import pytest

from bastion.web.pages import NAVIGATION
from tests.conftest import ApiClient


@pytest.mark.parametrize("path", [href for href, _ in NAVIGATION if href != "/docs"])
def test_each_page_has_the_shared_navigation(client: ApiClient, path: str) -> None:
    html = client.get(path).text
    assert html.startswith("<!doctype html>") and html.rstrip().endswith("</html>")
    assert html.count('<header class="topbar">') == 1
    for href, label in NAVIGATION:
        assert (f'href="{href}"' in html) == (href != path), (path, href)
        if href != path:
            assert label in html
    assert '<script src="/static/' in html
