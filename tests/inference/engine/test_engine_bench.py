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
