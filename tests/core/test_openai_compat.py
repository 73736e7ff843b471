"""OpenAI's preset voice names have one home, `voicefinetune.openai_compat`, which the inference server and the
facade's proxy both use: no other module spells one."""

from __future__ import annotations

import ast
from pathlib import Path

from voicefinetune.openai_compat import PRESET_VOICES

PACKAGE = Path(__file__).resolve().parents[2] / "voicefinetune"


def test_no_module_but_the_core_one_spells_a_preset_voice_name():
    modules = {
        path.resolve() for path in PACKAGE.rglob("*.py")
    }  # the parts' folders are linked in: once each
    spelled: dict[str, set[str]] = {}
    for module in modules:
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and node.value.lower() in PRESET_VOICES
            ):
                spelled.setdefault(module.name, set()).add(node.value.lower())
    assert spelled == {"openai_compat.py": set(PRESET_VOICES)}
