"""The clone prompt cache of a loaded model: least recently used prompts go beyond its capacity, and a failed
computation is not kept."""

from __future__ import annotations

import pytest
from voicefinetune_inference.engine.clone_prompts import ClonePrompts


def test_the_least_recently_used_prompt_goes_beyond_the_capacity():
    prompts = ClonePrompts(capacity=2)
    computed: list[str] = []

    def get(key: str) -> tuple[str, bool]:
        return prompts.get(key, lambda: computed.append(key) or f"prompt of {key}")

    assert [get("a"), get("b"), get("a"), get("c")] == [
        ("prompt of a", False),
        ("prompt of b", False),
        ("prompt of a", True),
        ("prompt of c", False),
    ]
    assert get("a") == ("prompt of a", True) and get("b") == ("prompt of b", False)  # b was the oldest
    assert computed == ["a", "b", "c", "b"] and len(prompts) == 2


def test_a_failed_computation_is_not_kept():
    prompts = ClonePrompts()

    def fail() -> str:
        raise ValueError("not a voice")

    with pytest.raises(ValueError, match="not a voice"):
        prompts.get("a", fail)
    assert prompts.get("a", lambda: "prompt") == ("prompt", False) and len(prompts) == 1
