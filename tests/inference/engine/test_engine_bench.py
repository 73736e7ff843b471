"""bench/engine.py compares the two engines on the same work."""

from __future__ import annotations

import pytest


@pytest.fixture
def engine_bench():
    """bench.engine with the one intra-op thread its main() sets: the test's time must not depend on what an earlier
    test left (an in-process inference server gives torch a share of the cores)."""
    import torch

    from bench import engine

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield engine
    torch.set_num_threads(threads)


def test_both_engines_make_the_same_frames_in_a_batch_of_8(engine_bench, tiny_models):
    """Under sampling a batch row that ends keeps being sampled upstream while the fast engine stops it, the random
    streams part and the engines make different frames (236 vs 293 for one seed): the bench must time the same work."""
    models = engine_bench.load_models(tiny_models.custom_voice, frames=16)
    runs = {engine: engine_bench.throughput(models[engine], 8, seed=0) for engine in engine_bench.ENGINES}
    assert runs["fast"].frames == runs["upstream"].frames > 0
    assert runs["fast"].audio_seconds == runs["upstream"].audio_seconds


def test_the_cuda_rows_drive_the_loops_step_and_say_not_measured_without_a_gpu(engine_bench, tiny_models):
    """`bench.engine_cuda` on the tiny talker on CPU (graphs off: none exist there): the code a GPU session will run,
    admitting rows and stepping them as the loop does; its table without a GPU measures nothing."""
    from voicefinetune_inference.engine import tts_model

    from bench import engine_cuda

    from .engine_helpers import load_tiny

    loaded = load_tiny(tiny_models, "custom_voice")
    try:
        case = engine_cuda.run_case(loaded.tts.model.talker, streams=2, graphs=False, frames=3)
    finally:
        tts_model.release(loaded)
    assert (case.streams, case.graphs, case.graph_bytes) == (2, False, 0)
    assert case.audio_per_second > 0 and case.first_audio > 0
    rows = [
        line for line in engine_cuda.render(None).splitlines() if line.startswith("| ") and "|---" not in line
    ]
    assert len(rows) == 1 + 2 * len(engine_cuda.STREAMS)
    assert all(row.count(engine_cuda.NOT_MEASURED) == 3 for row in rows[1:])
