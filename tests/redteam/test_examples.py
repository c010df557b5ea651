"""The example campaigns stay valid: every plugin and option checks, and they plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.core.settings import load_settings
from bastion.redteam.campaign import check, load_campaign, plan

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples" / "redteam").glob("*.toml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_campaign_plans(path: Path) -> None:
    settings = load_settings()
    spec = load_campaign(path)
    check(spec, settings)
    units = plan(spec, settings)
    assert units and len({u.key for u in units}) == len(units)
    assert any(u.probe == "xstest" for u in units), "over-refusal is measured beside ASR"


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 2
