"""docs/benchmarks.md, where every benchmark script writes its table under its own heading."""

from __future__ import annotations

import os
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def write_section(heading: str, text: str) -> None:
    """Replace what stands under ``heading`` (up to the next ``## `` heading) with ``text``; a new heading goes
    at the end."""
    docs = DOCS.read_text(encoding="utf-8")
    if heading not in docs:
        docs = docs.rstrip("\n") + "\n\n" + heading + "\n"
    start = docs.index(heading) + len(heading)
    end = docs.find("\n## ", start)
    end = len(docs) if end < 0 else end
    DOCS.write_text(docs[:start] + "\n\n" + text.rstrip("\n") + "\n" + docs[end:], encoding="utf-8")


def load_average() -> float:
    """The one-minute load average, NaN where the platform has none: printed beside timings (shared machines)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
