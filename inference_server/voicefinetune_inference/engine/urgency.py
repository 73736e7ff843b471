"""Whether a consumer is waiting on a request now. The decode loop admits urgent requests (a stream's current
sentence, a buffered call) before look-ahead ones (a stream's next sentence, generated while the current one is
sent); a look-ahead request turns urgent once its stream reaches it, so it is never starved."""

from __future__ import annotations

import threading


class Urgency:
    def __init__(self, urgent: bool = True):
        self._urgent = threading.Event()  # read by the loop's thread, set by the consumer's
        if urgent:
            self._urgent.set()

    @property
    def urgent(self) -> bool:
        return self._urgent.is_set()

    def promote(self) -> None:
        """The consumer now waits on this request."""
        self._urgent.set()
