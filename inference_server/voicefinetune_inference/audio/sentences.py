"""Splitting a long input at sentence boundaries, so a streamed response can say one sentence while the next one
is generated. Very short sentences are joined to the next one; a sentence longer than ``max_chars`` is cut at a
comma or a space."""

from __future__ import annotations

import re

# A sentence ends at . ! ? … (and their CJK forms 。！？) followed by closing quotes/brackets and space or the end;
# CJK enders need no space after them. Newlines (paragraphs) always end a sentence.
_BOUNDARY = re.compile(
    r"(?<=[.!?…])\s+|(?<=[.!?…][\"'”’)\]])\s+"
    r"|(?<=[。！？；])\s*(?=[^」』”’）\s])|(?<=[。！？；][」』”’）])\s*(?=\S)"
    r"|\n\s*"
)
_CJK_ENDERS = "。！？；」』”’）"
MIN_CHARS = 12
MAX_CHARS = 400


def split_sentences(text: str, *, max_chars: int = MAX_CHARS, min_chars: int = MIN_CHARS) -> list[str]:
    pieces = [p.strip() for p in _BOUNDARY.split(text) if p and p.strip()]
    merged: list[str] = []
    carry = ""
    for piece in pieces:
        carry = _join(carry, piece) if carry else piece
        if len(carry) >= min_chars:
            merged.append(carry)
            carry = ""
    if carry:
        if merged and len(merged[-1]) + len(carry) + 1 <= max_chars:
            merged[-1] = _join(merged[-1], carry)
        else:
            merged.append(carry)
    return [part for sentence in merged for part in _cut(sentence, max_chars)]


def _join(first: str, second: str) -> str:
    """Two pieces of text as one: CJK text runs on without a space."""
    return first + second if first[-1] in _CJK_ENDERS else f"{first} {second}"


def _cut(sentence: str, max_chars: int) -> list[str]:
    parts = []
    while len(sentence) > max_chars:
        window = sentence[:max_chars]
        cut = max(window.rfind(", "), window.rfind("，"), window.rfind("; "))
        if cut < max_chars // 3:
            cut = window.rfind(" ")
        if cut < max_chars // 3:
            cut = max_chars - 1
        parts.append(sentence[: cut + 1].strip())
        sentence = sentence[cut + 1 :].strip()
    if sentence:
        parts.append(sentence)
    return parts
