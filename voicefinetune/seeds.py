"""Sampling seeds: the range a request may give, and the seeds derived from one (a chapter's segments, the sentences
of a streamed speech request)."""

from __future__ import annotations

import hashlib
from typing import overload

SEED_LIMIT = 2**63  # a seed is 0 <= seed < SEED_LIMIT: the decode loop keeps each row's seed as an int64
SEED_HELP = (
    "Fixes the sampling (0 to 2^63-1): the same seed, text, voice and settings give the same audio under the "
    "default continuous scheduler (VFT_SCHEDULER=continuous, VFT_ENGINE=fast); not applied under "
    "VFT_SCHEDULER=batch or VFT_ENGINE=upstream; none: a new sample"
)


@overload
def derived_seed(seed: int, *path: int) -> int: ...
@overload
def derived_seed(seed: None, *path: int) -> None: ...
def derived_seed(seed: int | None, *path: int) -> int | None:
    """The seed of the part at ``path`` of work seeded with ``seed`` (a chapter's segment and attempt, a stream's
    sentence): the first 8 bytes of the SHA-256 of ``seed`` and ``path`` as ASCII decimals joined by ``:``,
    little-endian, top bit cleared. Parts draw apart from each other, and each one the same every time. Unseeded
    work (None) has unseeded parts."""
    if seed is None:
        return None
    digest = hashlib.sha256(":".join(str(part) for part in (seed, *path)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (SEED_LIMIT - 1)
