"""Text normalisation for list matching, with a map back to the original character offsets.

`normalize(text)` folds the tricks people use to slip words past a list while keeping track, for every
character of the result, of the span of the original text it came from:

1. Unicode NFKC per grapheme (fullwidth, circled and mathematical letters become plain ones), then
   casefold; accents on Latin letters are dropped ("kíll" -> "kill").
2. Format and zero-width characters (U+200B, U+00AD, joiners, BOM, variation selectors) are removed;
   typographic quotes and dashes become ASCII; runs of whitespace become one space.
3. Spaced-out words, three or more single characters joined by one repeated separator ("k.i.l.l",
   "k i l l", "k-i-l-l"), are joined up.
4. Inside a word that has at least one letter: leetspeak digits and symbols become letters
   ("k1ll" -> "kill", "h4t3" -> "hate", "@ss" -> "ass"), and Cyrillic or Greek look-alikes become Latin
   letters when the word mixes scripts or is made only of look-alikes. Numbers on their own and
   ordinary Cyrillic or Greek words are left alone.

`compile_phrase` turns a list entry into a regex over normalised text that also tolerates stretched
letters ("kiiill"), the i/l confusion and any punctuation between words.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["NormalizedText", "compile_phrase", "normalize", "normalize_phrase"]

# Leetspeak: digits and symbols that stand in for letters inside a word.
_LEET_DIGITS = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t"}
# Symbols fold only next to a letter; "!" only when a letter follows, so that "kill!" stays "kill!".
_LEET_SYMBOLS = {"@": "a", "$": "s", "|": "i", "!": "i", "+": "t", "€": "e", "¡": "i"}

# Cyrillic and Greek letters (lower case, after casefold) that look like Latin ones.
_CONFUSABLES = {
    "а": "a", "в": "b", "е": "e", "ё": "e", "з": "3", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p",
    "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "һ": "h", "ԁ": "d",
    "ԛ": "q", "ԝ": "w", "ɡ": "g", "ɑ": "a", "ο": "o", "α": "a", "β": "b", "ε": "e", "ι": "i", "κ": "k",
    "ν": "v", "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "γ": "y", "η": "n", "ω": "w",
}  # fmt: skip

# Typographic punctuation folded to ASCII so that entries can be written with plain quotes and dashes.
_PUNCT = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "`": "'", "\u00b4": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2033": '"',
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-", "\u2212": "-",
}  # fmt: skip

# Characters that may join spaced-out letters ("k.i.l.l"); the same one must repeat.
_SPACING_SEPARATORS = " .-_*~·•|/,+'"
_SPACED_OUT = re.compile(
    r"(?<![^\W_])([^\W_])([" + re.escape(_SPACING_SEPARATORS) + r"])[^\W_](?:\2[^\W_])+(?![^\W_])"
)


@dataclass(frozen=True)
class NormalizedText:
    """A normalised string and, for each of its characters, the original (start, end) it came from."""

    original: str
    text: str
    starts: tuple[int, ...]
    ends: tuple[int, ...]

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        """The span of the original text behind the normalised span [start, end)."""
        if not self.text:
            return (0, 0)
        if end <= start:
            pos = self.starts[start] if start < len(self.starts) else len(self.original)
            return (pos, pos)
        return (self.starts[start], self.ends[end - 1])


def _is_latin_base(ch: str) -> bool:
    code = ord(ch)
    return code < 0x250 or 0x1E00 <= code <= 0x1EFF


def _is_mark(ch: str) -> bool:
    return unicodedata.category(ch) in ("Mn", "Me", "Mc")


@lru_cache(maxsize=4096)
def _skip_kind(ch: str) -> int:
    """0 for an ordinary character, 1 for a combining mark, 2 for a format (zero-width) character."""
    if _is_mark(ch):
        return 1
    return 2 if unicodedata.category(ch) == "Cf" else 0


@lru_cache(maxsize=16384)
def _fold_cluster(cluster: str) -> str:
    """NFKC and casefold one base character with its combining marks; drop marks on Latin letters."""
    decomposed = unicodedata.normalize("NFKD", cluster)
    if decomposed and _is_latin_base(decomposed[0]):
        decomposed = "".join(c for c in decomposed if not _is_mark(c))
    folded = unicodedata.normalize("NFKC", decomposed).casefold()
    # casefold can produce combining marks again (e.g. "İ" -> "i̇").
    if folded and _is_latin_base(folded[0]):
        folded = "".join(c for c in folded if not _is_mark(c))
    return "".join(_PUNCT.get(c, c) for c in folded if unicodedata.category(c) != "Cf")


def _first_pass(text: str) -> tuple[list[str], list[int], list[int]]:
    chars: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    i = 0
    n = len(text)
    while i < n:
        j = i + 1
        while j < n and _skip_kind(text[j]) == 1:
            j += 1
        if _skip_kind(text[i]):
            # Format characters and stray marks (variation selectors, CGJ) carry nothing to match.
            i = j
            continue
        for c in _fold_cluster(text[i:j]):
            if c.isspace():
                if chars and chars[-1] == " ":
                    ends[-1] = j
                    continue
                c = " "
            chars.append(c)
            starts.append(i)
            ends.append(j)
        i = j
    return chars, starts, ends


_WHITESPACE_OR_NOT = re.compile(r"(\s+)|\S+")
_WHITESPACE_TO_FOLD = re.compile(r"[^\S ]|  ")


def _first_pass_ascii(text: str) -> tuple[list[str], list[int], list[int]]:
    """`_first_pass` for ASCII text, where folding is lower-casing and the backtick: whole runs at once."""
    folded = text.lower().replace("`", "'")
    if not _WHITESPACE_TO_FOLD.search(folded):  # one character in, one out
        return list(folded), list(range(len(folded))), list(range(1, len(folded) + 1))
    chars: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    for match in _WHITESPACE_OR_NOT.finditer(folded):
        start, end = match.span()
        if match.group(1) is not None:
            chars.append(" ")
            starts.append(start)
            ends.append(end)
        else:
            chars.extend(match.group())
            starts.extend(range(start, end))
            ends.extend(range(start + 1, end + 1))
    return chars, starts, ends


def _join_spaced_out(chars: list[str], starts: list[int], ends: list[int]) -> None:
    text = "".join(chars)
    drop: set[int] = set()
    for match in _SPACED_OUT.finditer(text):
        drop.update(range(match.start() + 1, match.end(), 2))
    if drop:
        keep = [k for k in range(len(chars)) if k not in drop]
        chars[:] = [chars[k] for k in keep]
        starts[:] = [starts[k] for k in keep]
        ends[:] = [ends[k] for k in keep]


def _fold_word(word: list[str]) -> None:
    if not any(c.isalpha() for c in word):
        return
    latin = any(c.isascii() and c.isalpha() for c in word)
    letters = [c for c in word if c.isalpha()]
    only_lookalikes = all(c in _CONFUSABLES or c.isascii() for c in letters)
    fold_lookalikes = latin or only_lookalikes
    for k, c in enumerate(word):
        if c in _LEET_DIGITS:
            word[k] = _LEET_DIGITS[c]
        elif c in _LEET_SYMBOLS:
            before = k > 0 and word[k - 1].isalnum()
            after = k + 1 < len(word) and word[k + 1].isalnum()
            if c == "+":
                fold = before and after
            elif c == "!":
                fold = after
            else:
                fold = before or after
            if fold:
                word[k] = _LEET_SYMBOLS[c]
        elif fold_lookalikes and c in _CONFUSABLES:
            word[k] = _CONFUSABLES[c]


_WORD = re.compile("(?:[^\\W_]|[" + re.escape("".join(_LEET_SYMBOLS)) + "])+")
_FOLDABLE_ASCII = frozenset(_LEET_DIGITS) | frozenset(_LEET_SYMBOLS)
_ASCII_WORD_CHARS = "a-zA-Z0-9" + re.escape("".join(c for c in _LEET_SYMBOLS if c.isascii()))
_ASCII_FOLDABLE = re.escape("".join(sorted(c for c in _FOLDABLE_ASCII if c.isascii())))
# In ASCII text, the words of `_WORD` that hold a foldable character (whole words: the lookbehind starts
# the match at the word's first character, the greedy runs take it to its last).
_ASCII_FOLDABLE_WORD = re.compile(
    f"(?<![{_ASCII_WORD_CHARS}])[{_ASCII_WORD_CHARS}]*[{_ASCII_FOLDABLE}][{_ASCII_WORD_CHARS}]*"
)


def _fold_words(chars: list[str]) -> None:
    joined = "".join(chars)
    # ASCII text: only its words with a foldable character can change, found in one scan.
    words = _ASCII_FOLDABLE_WORD.finditer(joined) if joined.isascii() else _WORD.finditer(joined)
    for match in words:
        word = match.group()
        if word.isascii() and _FOLDABLE_ASCII.isdisjoint(word):
            continue  # nothing in a plain ASCII word folds
        start, end = match.span()
        letters = chars[start:end]
        _fold_word(letters)
        chars[start:end] = letters


def normalize(text: str) -> NormalizedText:
    """Normalise `text` for matching and keep the map back to original offsets (see module doc)."""
    chars, starts, ends = _first_pass_ascii(text) if text.isascii() else _first_pass(text)
    _join_spaced_out(chars, starts, ends)
    _fold_words(chars)
    return NormalizedText(text, "".join(chars), tuple(starts), tuple(ends))


def normalize_phrase(phrase: str) -> str:
    """The normalised form of a list entry, stripped of surrounding space."""
    return normalize(phrase).text.strip()


def compile_phrase(phrase: str) -> str:
    """A regex (source) matching `phrase` as whole words in normalised text.

    Letters may be stretched ("kiiill"), "i" and "l" stand for each other, and any run of punctuation or
    space may sit where the phrase has a space; punctuation inside a word is optional ("i'm" ~ "im").
    Returns "" for a phrase with nothing to match.
    """
    norm = normalize_phrase(phrase)
    parts: list[str] = []
    k = 0
    while k < len(norm):
        c = norm[k]
        if c == " ":
            parts.append(r"[\W_]+")
            k += 1
            continue
        if not (c.isalnum()):
            parts.append(r"[\W_]*")
            while k < len(norm) and not norm[k].isalnum() and norm[k] != " ":
                k += 1
            continue
        cls = "[il]" if c in "il" else re.escape(c)
        run = 1
        while k + run < len(norm) and (norm[k + run] == c or (c in "il" and norm[k + run] in "il")):
            run += 1
        parts.append(cls + ("+" if run == 1 else f"{{{run},}}"))
        k += run
    if not any(c.isalnum() for c in norm):
        return ""
    return r"(?<![^\W_])" + "".join(parts) + r"(?![^\W_])"
