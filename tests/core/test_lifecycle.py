"""The trainer's stages have one home, `voicefinetune.lifecycle`: the trainer, the facade and the operator use its
constants, so no other module spells a stage that is only a stage (``uploading``, ``done``)."""

from __future__ import annotations

from tests.helpers.sources import ROOT, string_constants
from voicefinetune.lifecycle import JOB_STATUSES, STAGE_DONE, STAGE_UPLOADING


def test_no_module_but_lifecycle_spells_a_stage_name():
    stage_only = {"uploading", "done"}  # the other stages share their names with job statuses
    assert {STAGE_UPLOADING, STAGE_DONE} == stage_only and not stage_only & set(JOB_STATUSES)
    spelled = {
        (str(module.relative_to(ROOT)), value) for module, value in string_constants() if value in stage_only
    }
    assert spelled == {("voicefinetune/lifecycle.py", "uploading"), ("voicefinetune/lifecycle.py", "done")}
