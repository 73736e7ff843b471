"""OpenAI's preset voice names have one home, `voicefinetune.openai_compat`, which the inference server and the
facade's proxy both use: no other module spells one."""

from __future__ import annotations

from tests.helpers.sources import ROOT, string_constants
from voicefinetune.openai_compat import PRESET_VOICES


def test_no_module_but_the_core_one_spells_a_preset_voice_name():
    spelled: dict[str, set[str]] = {}
    for module, value in string_constants():
        if value.lower() in PRESET_VOICES:
            spelled.setdefault(str(module.relative_to(ROOT)), set()).add(value.lower())
    assert spelled == {"voicefinetune/openai_compat.py": set(PRESET_VOICES)}
