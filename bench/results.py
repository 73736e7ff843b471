"""docs/benchmarks.md, where every benchmark script writes its table under its own heading."""

from __future__ import annotations

from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def write_section(heading: str, text: str) -> None:
    """Replace what stands under ``heading`` (up to the next ``## `` heading) with ``text``."""
    docs = DOCS.read_text(encoding="utf-8")
    start = docs.index(heading) + len(heading)
    end = docs.find("\n## ", start)
    end = len(docs) if end < 0 else end
    DOCS.write_text(docs[:start] + "\n\n" + text.rstrip("\n") + "\n" + docs[end:], encoding="utf-8")
