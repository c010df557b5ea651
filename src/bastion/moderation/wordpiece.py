"""BERT's WordPiece tokenisation of plain ASCII text in Python, equal to the `tokenizers` library on it.

The Rust tokenizer costs 50-120 us per short text when called from Python on these machines (building its
`Encoding` and converting it back to Python lists is most of that), more than the rest of a moderation
call's Python. For the common case, an ASCII text of under one window, this does the same steps with a
cache of the words already seen: about 20 us. Anything else (non-ASCII text, control characters, the text
of a special token such as `[MASK]`, a text longer than one window, a tokenizer that is not plain BERT
WordPiece) is left to the Rust tokenizer, so results never depend on which path ran.

The steps, for ASCII text (`tokenizer.json`'s BertNormalizer, BertPreTokenizer, WordPiece and
`[CLS] $A [SEP]` template):

- lower-casing (clean-up, accents and CJK spacing do nothing to ASCII text without control characters);
- words are runs of letters and digits; every other visible character is a word of its own (BERT counts
  all of them as punctuation); white space separates;
- each word is cut greedily into the longest vocabulary entries from its start, later pieces with the
  `##` prefix; a word with a part that is in no entry, or longer than `max_input_chars_per_word`, is one
  unknown token;
- offsets are character positions in the text, `(0, 0)` for the special tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

_WORDS = re.compile(r"[a-z0-9]+|[^a-z0-9 \t\n\r]")
_PLAIN = re.compile(r"[\t\n\r\x20-\x7e]*")
CACHE_WORDS = 65536
MAX_CHARS_PER_TOKEN = 100
"""Texts of more characters than this per token of a window go straight to the Rust tokenizer: they
hardly ever fit one window, and are not first tokenised here in vain."""


@dataclass
class AsciiWordPiece:
    """The fast path; `from_tokenizer_json` returns None for a tokenizer it would not reproduce exactly.

    `first` and `last` are the ids of the template's special tokens, `specials` the texts of the added
    tokens (a text holding one goes to the Rust tokenizer)."""

    vocab: dict[str, int]
    unknown: int
    first: int
    last: int
    specials: list[str]
    max_word_chars: int
    _cache: dict[str, tuple[tuple[int, int, int], ...]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_tokenizer_json(cls, data: dict[str, Any]) -> AsciiWordPiece | None:
        """The fast path for a parsed `tokenizer.json`, if it is exactly the BERT set-up described above."""
        normalizer = data.get("normalizer") or {}
        model = data.get("model") or {}
        post = data.get("post_processor") or {}
        plain_bert = (
            normalizer.get("type") == "BertNormalizer"
            and normalizer.get("lowercase") is True
            and normalizer.get("clean_text") is True
            and (data.get("pre_tokenizer") or {}).get("type") == "BertPreTokenizer"
            and model.get("type") == "WordPiece"
            and model.get("continuing_subword_prefix") == "##"
            and post.get("type") == "TemplateProcessing"
        )
        if not plain_bert:
            return None
        template = post.get("single") or []
        shape = [next(iter(part)) for part in template]
        if shape != ["SpecialToken", "Sequence", "SpecialToken"]:
            return None
        special_ids = post.get("special_tokens") or {}
        try:
            first = special_ids[template[0]["SpecialToken"]["id"]]["ids"]
            last = special_ids[template[2]["SpecialToken"]["id"]]["ids"]
            vocab = {str(k): int(v) for k, v in model["vocab"].items()}
            unknown = vocab[model["unk_token"]]
        except (KeyError, TypeError, ValueError):
            return None
        if len(first) != 1 or len(last) != 1:
            return None
        specials = [str(t["content"]) for t in data.get("added_tokens") or []]
        max_chars = int(model.get("max_input_chars_per_word", 100))
        return cls(vocab, unknown, int(first[0]), int(last[0]), specials, max_chars)

    def encode(self, text: str, max_length: int) -> tuple[list[int], list[tuple[int, int]]] | None:
        """(ids, character offsets) with the special tokens, or None when this text is not for the fast
        path (see the module doc) or needs more than `max_length` tokens."""
        if len(text) > max_length * MAX_CHARS_PER_TOKEN or not text.isascii() or not _PLAIN.fullmatch(text):
            return None
        if "[" in text and any(special in text for special in self.specials):
            return None
        ids = [self.first]
        offsets = [(0, 0)]
        cache = self._cache
        for match in _WORDS.finditer(text.lower()):
            word = match.group()
            pieces = cache.get(word)
            if pieces is None:
                pieces = self._pieces(word)
                if len(cache) >= CACHE_WORDS:
                    cache.clear()
                cache[word] = pieces
            start = match.start()
            for token, begin, end in pieces:
                ids.append(token)
                offsets.append((start + begin, start + end))
            if len(ids) >= max_length:  # no room for the closing token: more than one window
                return None
        ids.append(self.last)
        offsets.append((0, 0))
        return ids, offsets

    def _pieces(self, word: str) -> tuple[tuple[int, int, int], ...]:
        """(token, start, end) of each piece of one lower-cased word, longest vocabulary match first."""
        if len(word) > self.max_word_chars:
            return ((self.unknown, 0, len(word)),)
        pieces = []
        start = 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                token = self.vocab.get(piece)
                if token is not None:
                    pieces.append((token, start, end))
                    break
                end -= 1
            else:
                return ((self.unknown, 0, len(word)),)
            start = end
        return tuple(pieces)
