"""Every `torch.load` of the project passes weights_only=True: a checkpoint file never runs code when loaded."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [
    "voicefinetune",
    "operator/voicefinetune_operator",
    "inference_server/voicefinetune_inference",
    "trainer_image/voicefinetune_trainer",
]


def torch_load_calls() -> list[tuple[str, ast.Call]]:
    calls = []
    for folder in SOURCES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "devtools" in path.parts or path.is_symlink():
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                func = node.func if isinstance(node, ast.Call) else None
                if (
                    isinstance(func, ast.Attribute)
                    and func.attr == "load"
                    and getattr(func.value, "id", "") == "torch"
                ):
                    calls.append((f"{path.relative_to(ROOT)}:{node.lineno}", node))
    return calls


def test_torch_load_always_uses_weights_only():
    calls = torch_load_calls()
    assert calls, "expected the trainer's optimizer-state load"
    unsafe = [
        where
        for where, call in calls
        if not any(k.arg == "weights_only" and getattr(k.value, "value", None) is True for k in call.keywords)
    ]
    assert unsafe == []
