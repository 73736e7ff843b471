"""The project's source packages (the core and each part's), read as syntax trees by tests that look for copies."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE_PACKAGES = (
    ROOT / "voicefinetune",
    ROOT / "operator" / "voicefinetune_operator",
    ROOT / "inference_server" / "voicefinetune_inference",
    ROOT / "trainer_image" / "voicefinetune_trainer",
)


def string_constants() -> Iterator[tuple[Path, str]]:
    """(module, value) for every string literal in every source module."""
    for package in SOURCE_PACKAGES:
        for module in sorted(package.rglob("*.py")):
            for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    yield module, node.value
