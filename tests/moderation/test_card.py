"""The model card: `card.json` rendered as Markdown (MODEL_CARD.md) and as HTML for the web UI."""

import json
from importlib import resources
from pathlib import Path

from bastion.moderation.card import backend_card, model_card_html, model_card_markdown, render_model_card

SHIPPED = Path(str(resources.files("bastion.moderation") / "artifacts" / "embedded"))


def shipped_card() -> dict:
    return json.loads((SHIPPED / "card.json").read_text(encoding="utf-8"))


def test_the_shipped_markdown_card_is_rendered_from_its_json() -> None:
    assert model_card_markdown(shipped_card()) == (SHIPPED / "MODEL_CARD.md").read_text(encoding="utf-8")


def test_html_card_has_the_tables_and_escapes_markup() -> None:
    card = shipped_card()
    card["model"] = "<script>alert(1)</script> heads"
    html = model_card_html(card)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert html.count("<table>") >= 3
    assert "<th>locale</th>" in html and "<td>overall</td>" in html


def test_a_card_this_version_cannot_render_keeps_its_json() -> None:
    old = {"model": "heads from an old version", "metrics": {}}
    assert render_model_card(old) is None
    entry = backend_card("embedded", old, render_model_card(old))
    assert entry == {"backend": "embedded", "card": old, "markdown": None, "html": None}
    assert backend_card("lists", None, None)["card"] is None
    assert (
        backend_card("x", {}, "# Title\n\n<b>bold</b>")["html"]
        == "<h1>Title</h1>\n<p>&lt;b&gt;bold&lt;/b&gt;</p>\n"
    )


def test_cli_prints_the_card_and_refuses_a_model_without_one() -> None:
    from typer.testing import CliRunner

    from bastion.moderation.cli_model import model_app

    printed = CliRunner().invoke(model_app, ["card"])
    assert printed.exit_code == 0, printed.output
    assert printed.stdout.startswith(model_card_markdown(shipped_card()) + "\n")
    assert "# Offensive-language backend (alt-profanity-check)" in printed.stdout
    as_json = CliRunner().invoke(model_app, ["card", "--json"])
    body = json.loads(as_json.stdout)
    assert body["model"] == "bastion-embedded" and body["backends"][0]["card"] == shipped_card()
    assert [b["backend"] for b in body["backends"]] == ["embedded", "profanity", "lists"]
    refused = CliRunner().invoke(model_app, ["card", "--model", "bastion-lists"])
    assert refused.exit_code == 1
    assert refused.stderr.strip() == "error: model 'bastion-lists' has no model card (its backends: lists)"
    unknown = CliRunner().invoke(model_app, ["card", "--model", "nope"])
    assert unknown.exit_code == 1 and "does not exist" in unknown.stderr
