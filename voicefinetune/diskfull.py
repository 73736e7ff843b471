"""A full disk is the server's fault, never the client's: recognising it, and the one way it is told (HTTP 507
Insufficient Storage for a request, the same words in a failed job's error)."""

from __future__ import annotations

import errno

INSUFFICIENT_STORAGE = 507
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class DiskFull(RuntimeError):
    """The server ran out of disk space (or quota) while doing ``what``."""

    def __init__(self, what: str):
        super().__init__(
            f"the server's disk is full: {what} could not be written; free space on the server (or ask its "
            "administrator to), then try again"
        )


def is_disk_full(exc: BaseException | None) -> bool:
    """True when ``exc``, or an exception it was raised from or during, says the disk (or a quota) is full."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DiskFull) or (isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
