"""Windowed output moderation: nothing is released unmoderated, and the leak before a block is bounded."""

from __future__ import annotations

import pytest

from bastion.gateway.policy import StageVerdict, redact
from bastion.gateway.settings import StreamingSettings
from bastion.gateway.streaming import Blocked, OutputWindow

PASSAGE = "then pack the steel pipe with black powder and seal both ends"  # harmful only as a whole
FILLER = "This is a perfectly ordinary sentence about the weather. "


def blocker(seen: list[str]) -> object:
    def check(text: str) -> StageVerdict:
        seen.append(text)
        if PASSAGE in text:
            return StageVerdict(action="block", categories={"illicit/violent": "block"})
        return StageVerdict()

    return check


def run(text: str, chunk: int, settings: StreamingSettings) -> tuple[str, bool]:
    window = OutputWindow(settings, blocker([]))  # type: ignore[arg-type]
    released = ""
    try:
        for start in range(0, len(text), chunk):
            released += window.feed(text[start : start + chunk])
        released += window.finish()
    except Blocked:
        return released, True
    return released, False


def leaked(released: str, text: str) -> int:
    """Characters of PASSAGE that reached the client."""
    start = text.index(PASSAGE)
    return max(0, min(len(released), start + len(PASSAGE)) - start)


@pytest.mark.parametrize("chunk", [1, 3, 17, 64])
def test_the_passage_never_gets_out_whole_and_the_leak_is_bounded(chunk: int) -> None:
    settings = StreamingSettings()
    worst = 0
    for offset in range(0, 400, 7):
        text = (FILLER * 8)[:offset] + PASSAGE + ". And more text follows here."
        released, blocked = run(text, chunk, settings)
        assert blocked, (offset, chunk)
        assert PASSAGE not in released
        assert text.startswith(released)
        worst = max(worst, leaked(released, text))
    assert worst < len(PASSAGE)
    assert worst <= settings.max_window_chars


def test_benign_text_is_released_exactly_and_in_windows() -> None:
    seen: list[str] = []
    settings = StreamingSettings(min_window_chars=20, max_window_chars=80, overlap_chars=30)
    window = OutputWindow(settings, blocker(seen))  # type: ignore[arg-type]
    text = FILLER * 5 + "no sentence end here but a long tail of words without any full stop at all"
    released = "".join(window.feed(text[i : i + 5]) for i in range(0, len(text), 5)) + window.finish()
    assert released == text
    assert all(len(s) <= 80 + 30 for s in seen)
    assert len(seen) >= len(text) // 80


def test_without_overlap_a_split_passage_can_slip_through() -> None:
    """Why overlap exists: with none, a passage split across windows is never seen whole."""
    settings = StreamingSettings(min_window_chars=10, max_window_chars=40, overlap_chars=0)
    text = "x" * 30 + " " + PASSAGE
    released, blocked = run(text, 1, settings)
    assert not blocked and released == text


def test_redact_replaces_spans() -> None:
    assert redact("say frob now", [(4, 8)]) == "say [redacted] now"
    assert redact("abcdef", [(0, 2), (1, 3)]) == "[redacted]def"
    assert redact("tail", [(2, 6)], start=4) == "[redacted]il"  # a span that began in the overlap


def test_the_documented_guarantee_holds_for_passages_up_to_overlap_plus_one() -> None:
    import tests.gateway.test_streaming_windows as me

    settings = StreamingSettings(min_window_chars=10, max_window_chars=50, overlap_chars=60)
    passage = ("harm " * 13)[:61]  # overlap + 1 characters
    original = me.PASSAGE
    me.PASSAGE = passage
    try:
        for chunk in (1, 4, 9):
            for offset in range(0, 150, 3):
                text = (FILLER * 4)[:offset] + passage + " tail."
                released, blocked = run(text, chunk, settings)
                assert blocked, (chunk, offset)
                assert leaked(released, text) <= settings.overlap_chars
    finally:
        me.PASSAGE = original
