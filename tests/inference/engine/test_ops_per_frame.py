"""bench/ops_per_frame.py counts a decode path's operations per frame on fake tensors of the 1.7B architecture."""

from __future__ import annotations

import copy

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from bench import ops_per_frame


def test_host_reads_are_answered_with_zero_and_counted():
    fake = FakeTensorMode()
    with fake:
        values = torch.ones(2, 3)
    seen: list[object] = []

    def work() -> None:
        sums = values.sum(1)  # one operation
        seen.append(bool(sums.any()))  # one operation, one read
        seen.append(sums.tolist())  # two reads

    counts = ops_per_frame.counted(fake, work)
    assert seen == [False, [0.0, 0.0]]
    assert counts["computing"] == 2
    assert counts["host_reads"] == 3


def test_casts_and_copies_dispatched_whole_in_inference_mode_count_as_computing():
    """Inference mode hands the counter `to`, `reshape` and `contiguous` before they decompose; they may alias
    (views) or copy (a kernel on a GPU): only the copies compute."""
    fake = FakeTensorMode()
    with fake:
        values = torch.ones(2, 3, 4, dtype=torch.bfloat16)

    def work() -> None:
        values.to(torch.float32)  # a cast: computes
        values.to(torch.bfloat16)  # the same dtype: the tensor itself
        values.transpose(1, 2).reshape(2, 12)  # a view, then a copy of strided data
        values.reshape(6, 4)  # a view

    with torch.inference_mode():
        counts = ops_per_frame.counted(fake, work)
    assert counts == {"computing": 2, "views": 3, "host_reads": 0}


@pytest.fixture(scope="module")
def shallow():
    """The 1.7B architecture's shapes with 2 talker layers and 1 predictor layer: the loop's reads per frame do not
    depend on depth, and fake tensors cost time per operation."""
    from bench.train_step import QWEN3_TTS_1_7B_BASE

    config = copy.deepcopy(QWEN3_TTS_1_7B_BASE)
    config["talker_config"]["num_hidden_layers"] = 2
    config["talker_config"]["code_predictor_config"]["num_hidden_layers"] = 1
    fake = FakeTensorMode(allow_non_fake_inputs=True)
    return fake, ops_per_frame.fake_model(fake, config)


# imports qwen_tts, builds fake modules and runs 4 prefills: about 12 s on an idle machine, 180 s on a busy one
@pytest.mark.timeout(300)
def test_the_fast_engine_reads_back_twice_per_frame_at_batch_1(shallow):
    """Its loop reads `bool(done.any())` and `rows.tolist()` (one row) each frame."""
    fake, model = shallow
    counts = ops_per_frame.fast(fake, model, 1, False)
    assert counts["host_reads"] == 2
    deeper = ops_per_frame.fast(fake, model, 2, False)  # two rows: `rows.tolist()` reads two values
    assert deeper["host_reads"] == 3
    assert deeper["computing"] == counts["computing"]  # the same launches for one row or two
