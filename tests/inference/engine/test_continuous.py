"""The continuous decode loop (`engine.scheduler`) on the tiny checkpoints: a request's codes do not depend on the
rows beside it, on when it joins, or on rows of other voices of the same model; sampled rows follow their seeds;
and the step is graph-ready (its buffers keep their storage per bucket, nothing in it waits for the device)."""

from __future__ import annotations

import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from voicefinetune_inference.engine import batch, fast_engine, tts_model
from voicefinetune_inference.engine import decode as fast_decode
from voicefinetune_inference.engine.scheduler import DecodeLoop
from voicefinetune_inference.engine.urgency import Urgency

from .engine_helpers import GREEDY, load_tiny

SLOTS = 4
LONG = "A rather longer line of text, so that its prompt is padded differently from the short one."
DEADLINE = 60.0


def with_loop(tiny_models, kind: str, **loop_options) -> tts_model.LoadedModel:
    loaded = load_tiny(tiny_models, kind)
    loaded.tts.generate_defaults.update(max_new_tokens=64)
    loop = DecodeLoop(loaded.tts.model.talker, slots=SLOTS, name=kind, **loop_options)
    fast_engine.attach(loaded.tts.model, loop)
    loaded.decode_loop = loop
    return loaded


@pytest.fixture(scope="module")
def custom(tiny_models):
    loaded = with_loop(tiny_models, "custom_voice")
    yield loaded
    tts_model.release(loaded)


@pytest.fixture(scope="module")
def base(tiny_models):
    loaded = with_loop(tiny_models, "base")
    yield loaded
    tts_model.release(loaded)


def reference_prompt(loaded: tts_model.LoadedModel, pitch: float, ref_text: str):
    rate = 24000
    t = np.arange(rate) / rate
    wave = sum(0.2 / k * np.sin(2 * np.pi * pitch * k * t) for k in range(1, 6))
    return tts_model.clone_prompt(
        loaded, wave.astype(np.float32), sample_rate=rate, ref_text=ref_text, use_xvec=False
    )


class Row:
    """One request's frames as the loop hands them over (in the requesting thread)."""

    def __init__(self) -> None:
        self.frames: list[torch.Tensor] = []
        self.started = threading.Event()
        self.rows_beside_first: int | None = None

    def codes(self) -> torch.Tensor:
        return torch.cat(self.frames) if self.frames else torch.empty(0, 16, dtype=torch.long)


def request(
    loaded: tts_model.LoadedModel,
    item: tts_model.SpeechItem,
    *,
    frames: int,
    seed: int = 0,
    sampled: bool = False,
    row: Row | None = None,
    urgency: Urgency | None = None,
) -> Row:
    """One utterance through upstream's call and the model's loop; its codes as the loop produced them."""
    row = row or Row()

    def on_frame(step, rows, codes):
        if not row.frames:
            row.rows_beside_first = loaded.decode_loop.status()["rows_running"]
        row.frames.append(codes.clone())
        row.started.set()

    options = fast_engine.CallOptions(frame_limits=[frames], on_frame=on_frame, seeds=[seed], urgency=urgency)
    settings = {} if sampled else GREEDY
    with fast_engine.decoding(loaded, options):
        tts_model.call_upstream(loaded, [item], **settings)
    return row


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def joined_after(loaded, running_item, item, *, offset: int, frames: int = 20, **options) -> tuple[Row, Row]:
    """``item`` submitted once ``running_item`` (a longer row) has produced ``offset`` frames."""
    running = Row()
    with ThreadPoolExecutor(1) as pool:
        background = pool.submit(request, loaded, running_item, frames=60, row=running, **options)
        wait_for(lambda: len(running.frames) >= offset or background.done(), f"{offset} frames")
        joined = request(loaded, item, frames=frames, **options)
        background.result(timeout=DEADLINE)
    return running, joined


def speaker(text: str, instruct: str = "") -> tts_model.SpeechItem:
    return tts_model.SpeechItem(text, "english", instruct=instruct, speaker="tiny_speaker")


@pytest.mark.parametrize("offset", [1, 5, 12])
def test_a_request_joined_mid_flight_makes_the_codes_it_makes_alone(custom, offset):
    item = speaker("Hello there, this is the request that joins.")
    alone = request(custom, item, frames=20).codes()
    running, joined = joined_after(custom, speaker(LONG), item, offset=offset)
    assert alone.shape == (19, 16)
    assert joined.rows_beside_first == 2  # it really ran beside the other row
    assert torch.equal(joined.codes(), alone)
    assert torch.equal(running.codes(), request(custom, speaker(LONG), frames=60).codes())


def test_rows_of_other_voices_on_the_same_model_leave_a_clone_unchanged(base):
    """Voice clones of two references (the voice is in the prompt) and a third text, all in one loop."""
    first = tts_model.SpeechItem(
        "The first cloned voice speaks.",
        "english",
        clone_prompt=reference_prompt(base, 140.0, "A low reference."),
    )
    second = tts_model.SpeechItem(
        LONG, "english", clone_prompt=reference_prompt(base, 230.0, "A higher reference line.")
    )
    alone = request(base, first, frames=16).codes()
    running, joined = joined_after(base, second, first, offset=3, frames=16)
    assert joined.rows_beside_first == 2
    assert alone.shape == (15, 16) and torch.equal(joined.codes(), alone)
    assert not torch.equal(running.codes()[:15], alone)  # a different voice did run beside it


def test_custom_voice_rows_with_other_instructions_leave_each_other_unchanged(custom):
    """The tiny CustomVoice checkpoint has one speaker: its rows differ by instruction and text here."""
    calm = speaker("Spoken calmly by the one speaker.", instruct="Calm and slow.")
    alone = request(custom, calm, frames=20).codes()
    running, joined = joined_after(custom, speaker(LONG, instruct="Loud and fast!"), calm, offset=4)
    assert joined.rows_beside_first == 2
    assert torch.equal(joined.codes(), alone)


def test_sampled_rows_follow_their_seeds_whatever_joins_or_leaves(custom):
    item = speaker("A sampled line of speech.")
    alone = request(custom, item, frames=20, seed=1234, sampled=True).codes()
    running, joined = joined_after(custom, speaker(LONG), item, offset=3, sampled=True, seed=1234)
    assert joined.rows_beside_first == 2
    assert torch.equal(joined.codes(), alone)
    other_seed = request(custom, item, frames=20, seed=99, sampled=True).codes()
    assert not torch.equal(other_seed[: len(alone)], alone[: len(other_seed)])


def test_buffered_generate_through_the_loop_equals_the_one_call_engine(tiny_models, custom):
    """`batch.generate` (the server's buffered call) of a fused pair: the same waveforms with or without the loop."""
    plain = load_tiny(tiny_models, "custom_voice")
    plain.tts.generate_defaults.update(max_new_tokens=64)
    for loaded in (plain, custom):
        loaded.tts.generate_defaults.update(GREEDY)
    try:
        items = [speaker("Hi."), speaker(LONG)]
        want = batch.generate(plain, items)
        got = batch.generate(custom, items)
    finally:
        for key in GREEDY:
            custom.tts.generate_defaults.pop(key)
    assert [len(w) for w in got] == [len(w) for w in want] == [63 * 1920, 63 * 1920]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def test_a_seeded_item_fused_with_unseeded_ones_keeps_its_seed(custom):
    """`batch.generate` of items of which only some carry a seed: a seeded row samples as it does alone."""
    seeded = dataclasses.replace(speaker("A sampled line of speech."), seed=4321)
    (alone,) = batch.generate(custom, [seeded])
    fused = batch.generate(custom, [speaker(LONG), seeded])
    assert len(fused[1]) == len(alone)
    np.testing.assert_allclose(fused[1], alone, atol=1e-3)  # the same codes; the codec decodes a padded batch


# --- admission -----------------------------------------------------------------------------------------------------


class Gate:
    """The loop's steps wait here: each runs once the test lets it (`step`), all of them once it is `opened`."""

    def __init__(self) -> None:
        self.permits = threading.Semaphore(0)
        self.steps = 0
        self.opened = False

    def __call__(self) -> Gate:  # the loop's ``step_context``
        return self

    def __enter__(self) -> None:
        if not self.opened and not self.permits.acquire(timeout=DEADLINE):
            raise TimeoutError("the test never let this step run")

    def __exit__(self, *exc) -> None:
        self.steps += 1

    def step(self) -> None:
        target = self.steps + 1
        self.permits.release()
        wait_for(lambda: self.steps >= target, "a step")

    def open(self) -> None:
        self.opened = True
        self.permits.release()


def test_an_urgent_request_is_admitted_before_earlier_look_ahead_work_which_is_served_once_urgent(
    tiny_models,
):
    """One slot, stepped by the test. While A runs, B (a stream's look-ahead sentence), then C and D (urgent: first
    sentences) wait. A's slot goes to C, though B came first; then B's stream reaches B (promoted), so B, earlier than
    D, goes next."""
    gate = Gate()
    loaded = load_tiny(tiny_models, "custom_voice")
    loop = DecodeLoop(loaded.tts.model.talker, slots=1, name="admission", step_context=gate)
    fast_engine.attach(loaded.tts.model, loop)
    loaded.decode_loop = loop
    rows = {name: Row() for name in "ABCD"}
    look_ahead = Urgency(urgent=False)
    order = ["A"]

    def hand_over() -> None:
        """Step until the running request is done, then once more: the first frame of the one admitted next."""
        while not futures[order[-1]].done():
            gate.step()
        gate.step()
        wait_for(lambda: any(rows[n].started.is_set() for n in rows if n not in order), "the next request")
        order.extend(n for n in rows if n not in order and rows[n].started.is_set())

    try:
        with ThreadPoolExecutor(4) as pool:
            futures = {"A": pool.submit(request, loaded, speaker("Line A."), frames=6, row=rows["A"])}
            wait_for(lambda: loop.status()["rows_running"] == 1, "A to be admitted")
            for waiting, (name, urgency) in enumerate([("B", look_ahead), ("C", None), ("D", None)], start=1):
                futures[name] = pool.submit(
                    request, loaded, speaker(f"Line {name}."), frames=6, row=rows[name], urgency=urgency
                )
                wait_for(lambda n=waiting: loop.status()["queue"] == n, f"{name} to wait")
            hand_over()
            look_ahead.promote()  # B's stream has sent the sentence before B: B is what it waits on now
            hand_over()
            hand_over()
            gate.open()
            for future in futures.values():
                future.result(timeout=DEADLINE)
    finally:
        gate.open()
        tts_model.release(loaded)
    assert order == ["A", "C", "B", "D"]
    assert [len(rows[name].frames) for name in "ABCD"] == [5, 5, 5, 5]


def test_a_look_ahead_request_gives_its_slot_to_an_urgent_one_and_redoes_its_frames_unseen(tiny_models):
    """One slot, stepped by the test: a look-ahead request runs alone (no urgent one waits) until an urgent one
    arrives; at the next frame boundary it leaves its slot to it, waits, then runs again from its prompt. Its
    caller sees each frame once, and the same codes as when it runs without interruption."""
    gate = Gate()
    loaded = load_tiny(tiny_models, "custom_voice")
    loop = DecodeLoop(loaded.tts.model.talker, slots=1, name="make-room", step_context=gate)
    fast_engine.attach(loaded.tts.model, loop)
    loaded.decode_loop = loop
    ahead, urgent = Row(), Row()
    line = speaker("A sentence generated ahead.")
    try:
        with ThreadPoolExecutor(2) as pool:
            behind = pool.submit(request, loaded, line, frames=8, row=ahead, urgency=Urgency(urgent=False))
            wait_for(lambda: loop.status()["rows_running"] == 1, "the look-ahead request to run")
            gate.step()
            gate.step()
            wait_for(lambda: len(ahead.frames) == 2, "its first two frames")  # the loop waits in its third
            first = pool.submit(request, loaded, speaker("Urgent."), frames=4, row=urgent)
            wait_for(lambda: loop.status()["queue"] == 1, "the urgent request to wait")
            gate.step()  # the frame the loop had admitted rows for before the urgent request came
            wait_for(lambda: len(ahead.frames) == 3, "its third frame")
            gate.step()
            wait_for(lambda: urgent.started.is_set() or len(ahead.frames) > 3, "the next frame")
            assert urgent.started.is_set() and len(ahead.frames) == 3
            assert (
                loop.status()["rows_running"] == 1 and loop.status()["queue"] == 1
            )  # the look-ahead waits again
            gate.open()
            first.result(timeout=DEADLINE)
            behind.result(timeout=DEADLINE)
            alone = request(loaded, line, frames=8).codes()
    finally:
        gate.open()
        tts_model.release(loaded)
    assert len(urgent.frames) == 3
    assert alone.shape == (7, 16) and torch.equal(ahead.codes(), alone)


# --- graph readiness ---------------------------------------------------------------------------------------------

# ops that read a tensor's value on the host (``bool(t)``, ``t.item()``, ``torch.equal``) or size their output by it
SYNCING = {
    "aten::_local_scalar_dense",
    "aten::is_nonzero",
    "aten::item",
    "aten::equal",
    "aten::nonzero",
    "aten::masked_select",
    "aten::unique",
    "aten::_unique2",
}
INDEXING = {
    "aten::index.Tensor",
    "aten::index_put_",
    "aten::index_put",
}  # host-free with integer indices only


def syncs_with_the_host(func, args) -> bool:
    name = func._schema.name
    if name in SYNCING:
        return True
    if f"{name}.{func._overloadname}" in INDEXING or name in INDEXING:
        indices = args[1] if len(args) > 1 else []
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices)
    return torch.Tag.dynamic_output_shape in func.tags or torch.Tag.data_dependent_output in func.tags


class HostSyncs(TorchDispatchMode):
    """Records the ops dispatched inside steps that read device data on the host or size their output by it."""

    def __init__(self, seen: list[str]):
        super().__init__()
        self.seen = seen

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if syncs_with_the_host(func, args):
            self.seen.append(func._schema.name)
        return func(*args, **(kwargs or {}))


def test_the_step_keeps_its_buffers_and_never_waits_for_the_device(tiny_models):
    syncs: list[str] = []
    storage: dict[int, set[tuple]] = {}
    holder: dict[str, DecodeLoop] = {}

    class Step:
        def __enter__(self):
            self.mode = HostSyncs(syncs)
            return self.mode.__enter__()

        def __exit__(self, *exc):
            self.mode.__exit__(*exc)
            decoder = holder["loop"].decoder
            record = tuple(sorted((n, t.data_ptr(), tuple(t.shape)) for n, t in decoder.buffers().items()))
            storage.setdefault(decoder.kv.bucket, set()).add(record)

    loaded = with_loop(tiny_models, "custom_voice", step_context=Step)
    holder["loop"] = loaded.decode_loop
    try:
        rows: list[Row] = [Row() for _ in range(3)]
        with ThreadPoolExecutor(3) as pool:
            first = pool.submit(request, loaded, speaker(LONG), frames=24, row=rows[0])
            wait_for(lambda: len(rows[0].frames) >= 2, "the first row")
            second = pool.submit(
                request, loaded, speaker("Short."), frames=6, row=rows[1], sampled=True, seed=5
            )
            wait_for(lambda: second.done(), "the second row")
            third = pool.submit(request, loaded, speaker("A third one joins."), frames=8, row=rows[2])
            for future in (first, third):
                future.result(timeout=DEADLINE)
    finally:
        tts_model.release(loaded)
    assert [len(rows[0].frames), len(rows[2].frames)] == [23, 7] and 0 < len(rows[1].frames) <= 5
    assert syncs == []
    assert len(storage) >= 2  # rows joined and left: the loop ran at more than one batch-size bucket
    for bucket, records in storage.items():
        assert len(records) == 1, f"bucket {bucket}: buffers changed storage or shape between steps"


def test_a_cancelled_request_frees_its_slot_at_the_next_frame(custom):
    """The caller stops waiting (a stream's consumer went away): its row leaves the loop long before its bound."""
    stop = threading.Event()
    row = Row()

    def on_frame(step, rows, codes):
        row.frames.append(codes)
        if len(row.frames) == 3:
            stop.set()

    options = fast_engine.CallOptions(
        frame_limits=[60], on_frame=on_frame, should_stop=stop.is_set, seeds=[0]
    )
    with pytest.raises(fast_decode.GenerationCancelled), fast_engine.decoding(custom, options):
        tts_model.call_upstream(custom, [speaker(LONG)], **GREEDY)
    loop = custom.decode_loop
    steps_at_cancel = loop.frames
    wait_for(lambda: loop.status()["rows_running"] == 0, "the slot to be freed")
    assert loop.frames - steps_at_cancel <= 2  # it left at the next frame boundary, not at its bound
    assert loop.status()["queue"] == 0
    assert len(row.frames) >= 3
    assert len(request(custom, speaker("Still serving."), frames=5).codes()) == 4  # the loop goes on


def test_under_eager_attention_a_joined_request_makes_the_codes_it_makes_alone(tiny_models):
    """Eager attention adds its mask to the scores: the step hands it the additive form (`layers.step_mask`), so
    the positions a row must not see (other lengths, a former row's keys) stay hidden there too."""
    loaded = load_tiny(tiny_models, "custom_voice")
    loaded.tts.model.talker.config._attn_implementation = "eager"
    loaded.tts.generate_defaults.update(max_new_tokens=64)
    loop = DecodeLoop(loaded.tts.model.talker, slots=SLOTS, name="eager")
    fast_engine.attach(loaded.tts.model, loop)
    loaded.decode_loop = loop
    try:
        item = speaker("Hello there, this is the request that joins.")
        alone = request(loaded, item, frames=12).codes()
        _, joined = joined_after(loaded, speaker(LONG), item, offset=4, frames=12)
    finally:
        tts_model.release(loaded)
    assert joined.rows_beside_first == 2
    assert alone.shape == (11, 16) and torch.equal(joined.codes(), alone)


def test_releasing_the_model_fails_its_running_requests_and_stops_the_loop(tiny_models):
    loaded = with_loop(tiny_models, "custom_voice")
    loop = loaded.decode_loop
    running = Row()
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(request, loaded, speaker(LONG), frames=60, row=running)
        wait_for(lambda: len(running.frames) >= 2, "the row to run")
        tts_model.release(loaded)
        with pytest.raises(RuntimeError, match="the model's decode loop has stopped"):
            future.result(timeout=DEADLINE)
    assert loop.stopped and loop.status()["rows_running"] == 0
