"""The voice-clone prompts one loaded Base model has computed, by reference: a small LRU that the requests of one
reference share (/voice-clone, batch clone items, /v1's clone voice). Requests that ask for the same reference at
the same time wait for one computation. Each loaded model has its own (the model's identity is part of the key by
construction), emptied when the model is released."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np

CAPACITY = 16  # prompts kept per model: a prompt is the reference's codec codes and speaker embedding (small)


def reference_digest(waveform: np.ndarray, rate: int, *, text: str, use_xvec: bool) -> str:
    """sha256 (hex) of a reference recording's samples and rate, ``text`` and ``use_xvec``."""
    digest = hashlib.sha256(f"{rate}:{use_xvec}:{text}:".encode())
    digest.update(np.ascontiguousarray(waveform, dtype=np.float32).tobytes())
    return digest.hexdigest()


def prompt_key(waveform: np.ndarray, rate: int, *, ref_text: str, use_xvec: bool) -> str:
    """What the prompt depends on: the samples, their rate, the transcript exactly as the model gets it (none with
    ``use_xvec``) and the mode."""
    return reference_digest(waveform, rate, text="" if use_xvec else ref_text, use_xvec=use_xvec)


class ClonePrompts:
    def __init__(self, capacity: int = CAPACITY):
        self.capacity = capacity
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, Future[Any]] = OrderedDict()

    def ready(self, key: str) -> Any | None:
        """(never blocks) The prompt of ``key`` if it is computed already, else None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or not entry.done() or entry.exception() is not None:
                return None
            self._entries.move_to_end(key)
        return entry.result()

    def get(self, key: str, compute: Callable[[], Any]) -> tuple[Any, bool]:
        """(blocking) The prompt of ``key`` and whether it was there already (or being computed by another
        caller, which this one waited for); else ``compute()``'s, kept. A failed computation is not kept: its
        error goes to the callers that waited for it, and the next caller computes again."""
        with self._lock:
            entry = self._entries.get(key)
            computing = entry is None
            if entry is None:
                entry = self._entries[key] = Future()
                self._evict()
            else:
                self._entries.move_to_end(key)
        if not computing:
            return entry.result(), True  # waits while another caller computes it
        try:
            prompt = compute()
        except BaseException as exc:
            with self._lock:
                if self._entries.get(key) is entry:
                    del self._entries[key]
            entry.set_exception(exc)
            raise
        entry.set_result(prompt)
        return prompt, False

    def _evict(self) -> None:
        """(under the lock) Drop the least recently used finished prompts beyond the capacity."""
        excess = len(self._entries) - self.capacity
        for key in [key for key, entry in self._entries.items() if entry.done()][: max(0, excess)]:
            del self._entries[key]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
