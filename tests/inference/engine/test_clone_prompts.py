"""The clone prompt cache of a loaded model: least recently used prompts go beyond its capacity, a caller that asks
while another computes the same prompt waits for that computation, and a failed computation is not kept."""

from __future__ import annotations

import functools
import sys
import threading
import time

import numpy as np
import pytest
from voicefinetune_inference.engine.clone_prompts import ClonePrompts, prompt_key


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


def _waits_on_a_future(thread: threading.Thread) -> bool:
    frame = sys._current_frames().get(thread.ident or 0)
    while frame is not None:
        if frame.f_code.co_name == "result" and "concurrent" in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


@pytest.mark.parametrize("fails", [False, True])
def test_a_caller_asking_during_the_computation_waits_for_it(fails):
    prompts = ClonePrompts()
    started, release = threading.Event(), threading.Event()
    calls: list[str] = []
    answers: dict[str, object] = {}

    def compute(name: str):
        calls.append(name)
        started.set()
        assert release.wait(30)
        if fails:
            raise ValueError("not a voice")
        return f"prompt by {name}"

    def ask(name: str) -> None:
        try:
            answers[name] = prompts.get("ref", lambda: compute(name))
        except ValueError as exc:
            answers[name] = str(exc)

    first = threading.Thread(target=ask, args=("first",))
    first.start()
    assert started.wait(30)
    second = threading.Thread(target=ask, args=("second",))
    second.start()
    try:
        deadline = time.monotonic() + 30
        while not _waits_on_a_future(second):
            assert time.monotonic() < deadline and calls == ["first"], calls
            time.sleep(0.01)
    finally:
        release.set()
    first.join(30)
    second.join(30)
    assert calls == ["first"]
    if fails:
        assert answers == {"first": "not a voice", "second": "not a voice"} and len(prompts) == 0
    else:
        assert answers == {"first": ("prompt by first", False), "second": ("prompt by first", True)}


def test_ready_answers_only_a_computed_prompt_without_waiting():
    prompts = ClonePrompts(capacity=2)
    assert prompts.ready("a") is None
    with pytest.raises(ValueError):
        prompts.get("a", lambda: (_ for _ in ()).throw(ValueError("not a voice")))
    assert prompts.ready("a") is None  # a failure is not a prompt
    prompts.get("a", lambda: "prompt of a")
    prompts.get("b", lambda: "prompt of b")
    assert prompts.ready("a") == "prompt of a"  # and a is now the most recently used
    prompts.get("c", lambda: "prompt of c")
    assert (prompts.ready("a"), prompts.ready("b")) == ("prompt of a", None)


def test_the_prompt_key_ignores_the_transcript_only_in_x_vector_mode():
    samples = np.sin(np.arange(2400, dtype=np.float32) / 7)
    key = functools.partial(prompt_key, samples, 24000)
    assert key(ref_text="one", use_xvec=True) == key(ref_text="two", use_xvec=True)
    assert key(ref_text="one", use_xvec=False) != key(ref_text="two", use_xvec=False)
    assert key(ref_text="one", use_xvec=False) != key(ref_text="one ", use_xvec=False)  # as the model gets it
    assert key(ref_text="", use_xvec=True) != key(ref_text="", use_xvec=False)
    assert prompt_key(samples, 16000, ref_text="one", use_xvec=False) != key(ref_text="one", use_xvec=False)
    assert prompt_key(samples[1:], 24000, ref_text="one", use_xvec=False) != key(
        ref_text="one", use_xvec=False
    )
