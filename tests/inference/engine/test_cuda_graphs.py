"""Graphs of the continuous loop's frame step (`engine.cuda_graphs`), on CPU: recorded with `tape_graphs.TapeRecorder`,
whose replay has a CUDA graph's semantics (the recorded ops again, on the tensors the capture read), a loop gives
each request the codes an eager loop gives it alone while rows join and leave; the recorded step reads nothing but
the model's weights and the decoder's own buffers; the graphs go with the model. Without CUDA, or with
``VFT_CUDA_GRAPHS=0``, nothing is recorded and /gpu/status says why. (No CUDA graph is captured here: no GPU.)"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from voicefinetune_inference.engine import tts_model
from voicefinetune_inference.engine.cuda_graphs import StepGraphs
from voicefinetune_inference.engine.slot_step import SlotDecoder

from voicefinetune.settings import Settings

from ..conftest import http_client
from .engine_helpers import load_tiny
from .tape_graphs import TapeRecorder
from .test_continuous import DEADLINE, LONG, Row, request, speaker, wait_for, with_loop

FIRST = speaker(LONG)
SECOND = speaker("A second row joins the first.")
THIRD = speaker("A third one, sampled.")


def run_together(loaded: tts_model.LoadedModel) -> list[torch.Tensor]:
    """The first row alone for a few frames, then two more join; the shorter ones leave before it ends."""
    rows = [Row() for _ in range(3)]
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(request, loaded, FIRST, frames=30, row=rows[0])
        wait_for(lambda: len(rows[0].frames) >= 3, "the first row")
        second = pool.submit(request, loaded, SECOND, frames=14, row=rows[1])
        third = pool.submit(request, loaded, THIRD, frames=8, row=rows[2], sampled=True, seed=77)
        for future in (first, second, third):
            future.result(timeout=DEADLINE)
    return [row.codes() for row in rows]


@pytest.fixture(scope="module")
def eager(tiny_models):
    loaded = with_loop(tiny_models, "custom_voice")
    yield loaded
    tts_model.release(loaded)


def test_replayed_frames_make_the_codes_eager_frames_make_alone(tiny_models, eager):
    alone = [
        request(eager, FIRST, frames=30).codes(),
        request(eager, SECOND, frames=14).codes(),
        request(eager, THIRD, frames=8, sampled=True, seed=77).codes(),
    ]
    recorder = TapeRecorder()
    taped = with_loop(tiny_models, "custom_voice", graphs=StepGraphs(recorder))
    try:
        together = run_together(taped)
        loop = taped.decode_loop
        status = loop.status()["graphs"]
        replays = {
            (tape.step.args[0], tape.step.keywords["sampling"]): tape.replays for tape in recorder.tapes
        }
        frames = loop.frames
    finally:
        tts_model.release(taped)
    assert [len(codes) for codes in alone] == [29, 13, 7]
    for got, want in zip(together, alone, strict=True):
        assert torch.equal(got, want)
    assert status == {
        "captured": True,
        "buckets": [1, 2, 4],
        "bytes": status["bytes"],
        "frames_replayed": frames,
        "reason": None,
    }
    assert status["bytes"] > 0
    assert sorted(replays) == [(b, s) for b in (1, 2, 4) for s in (False, True)]
    assert sum(replays.values()) == frames  # every frame was a replay ...
    assert replays[1, False] > 0  # ... of the first row alone (greedy: no draws) ...
    assert replays[2, True] + replays[4, True] > 0  # ... and of more rows, one of them sampled
    assert recorder.tapes == [] and recorder.held_bytes() == 0  # released with the model


def test_the_recorded_step_reads_only_weights_and_the_decoders_buffers(tiny_models):
    recorder = TapeRecorder()
    loaded = with_loop(tiny_models, "custom_voice", graphs=StepGraphs(recorder))
    try:
        request(loaded, SECOND, frames=3)
        decoder = loaded.decode_loop.decoder
        talker = loaded.tts.model.talker
        static = [*talker.parameters(), *talker.buffers(), *held_tensors(decoder)]
        storages = {t.untyped_storage().data_ptr() for t in static}
        read = [{t.untyped_storage().data_ptr() for t in tape.inputs()} for tape in recorder.tapes]
        constants = [t for tape in recorder.tapes for t in tape.constants.values()]
    finally:
        tts_model.release(loaded)
    assert len(read) == 6  # buckets 1, 2 and 4, with and without the draws
    for inputs in read:
        assert inputs and inputs <= storages
    # the step's constants are literals of its code (``drop[..., -1:] = False``), never host data
    assert all(t.dim() == 0 for t in constants)


def held_tensors(holder: object, depth: int = 2) -> list[torch.Tensor]:
    """Tensors an object holds in its attributes (in lists too), and those of the objects it holds (not modules)."""
    found: list[torch.Tensor] = []
    for value in vars(holder).values():
        values = value if isinstance(value, list) else [value]
        for item in values:
            if isinstance(item, torch.Tensor):
                found.append(item)
            elif depth > 1 and hasattr(item, "__dict__") and not isinstance(item, torch.nn.Module):
                found.extend(held_tensors(item, depth - 1))
    return found


def test_a_tape_replays_host_values_as_captured_and_reads_its_buffers_anew():
    """The double's replay semantics (those of a CUDA graph), on a step that mixes both kinds of input."""
    buffer, out = torch.tensor([1.0, 2.0]), torch.zeros(2)
    host = [10.0]
    recorder = TapeRecorder()
    replay = recorder.record(lambda: out.copy_(buffer * 2 + torch.tensor(host[0])))
    assert out.tolist() == [12.0, 14.0]
    buffer.copy_(torch.tensor([3.0, 4.0]))
    host[0] = 100.0
    replay()
    assert out.tolist() == [16.0, 18.0]  # the buffer's new values; the host value of the capture


@pytest.mark.parametrize(("overrides", "reason"), [({}, "cpu"), ({"cuda_graphs": False}, "disabled")])
async def test_gpu_status_says_why_no_graph_is_captured(make_service, overrides, reason):
    service = await make_service(**overrides)
    async with http_client(service) as client:
        answer = await client.post("/voice-design", json={"text": "Hello.", "instruct": "A warm voice"})
        assert answer.status_code == 200
        (model,) = (await client.get("/gpu/status")).json()["loaded_models"]
    assert model["decode_loop"]["graphs"] == {
        "captured": False,
        "buckets": [],
        "bytes": 0,
        "frames_replayed": 0,
        "reason": reason,
    }


def test_the_setting_defaults_to_on_and_reads_vft_cuda_graphs():
    assert Settings.from_env({}).cuda_graphs is True
    assert Settings.from_env({"VFT_CUDA_GRAPHS": "0"}).cuda_graphs is False
    assert Settings.from_env({"VFT_CUDA_GRAPHS": "on"}).cuda_graphs is True


def test_graphs_of_buffers_that_grew_are_not_replayed_until_recorded_again(tiny_models):
    """A request longer than any before grows the slot buffers (new tensors): the old graphs would read the old
    ones, so frames run eagerly until the loop, idle again, records at the new capacity."""
    loaded = load_tiny(tiny_models, "custom_voice")
    try:
        talker = loaded.tts.model.talker
        decoder = SlotDecoder(talker, slots=2, capacity=64, like=talker.codec_head.weight)
        recorder = TapeRecorder()
        graphs = StepGraphs(recorder)
        with torch.inference_mode():
            graphs.capture(decoder, [1, 2])
            graphs.frame(decoder, 2, 64)
            decoder.grow(128)
            grown = graphs.status(decoder)
            graphs.frame(decoder, 2, 64)
            stale = graphs.status(decoder)
            graphs.capture(decoder, [1, 2])
            graphs.frame(decoder, 2, 128)
    finally:
        tts_model.release(loaded)
    assert (grown["captured"], grown["bytes"] > 0) == (False, True)  # dropped by the next frame
    assert stale == {
        "captured": False,
        "buckets": [],
        "bytes": 0,  # dropped at once
        "frames_replayed": 1,
        "reason": "buffers grew: recorded again when idle",
    }
    assert graphs.replayed == 2 and graphs.status(decoder)["buckets"] == [1, 2]
    assert len(recorder.tapes) == 4  # those of the new capacity only


def test_a_talker_under_flash_attention_gets_no_graphs_and_says_why(tiny_models):
    """Hugging Face's flash attention unpads the step's mask with host reads: nothing to capture (on any device)."""
    loaded = load_tiny(tiny_models, "custom_voice")
    try:
        talker = loaded.tts.model.talker
        talker.config._attn_implementation = "flash_attention_2"
        graphs = StepGraphs.for_talker(talker, enabled=True)
    finally:
        tts_model.release(loaded)
    assert graphs.recorder is None
    assert graphs.status(None)["reason"] == "flash attention reads the mask on the host"
