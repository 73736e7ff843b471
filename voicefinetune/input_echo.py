"""How much of a client's input an error repeats: a short prefix, so that no error body grows with the request."""

from __future__ import annotations

from typing import Any

ECHO_CHARS = 100  # the most of one input value an error body repeats


def short_repr(value: Any) -> str:
    """``repr(value)``, cut to ``ECHO_CHARS`` characters and an ellipsis when longer."""
    text = repr(value)
    return text if len(text) <= ECHO_CHARS else f"{text[:ECHO_CHARS]}…"
