"""Per-row LoRA adapters on one resident Base model (engine/lora.py) against PEFT's own merged weights, greedy."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel
from voicefinetune_inference.caches.lora_voices import LoraVoice, read_lora_voice
from voicefinetune_inference.engine import fast_engine, tts_model
from voicefinetune_inference.engine.cuda_graphs import StepGraphs
from voicefinetune_inference.engine.lora import AdapterBank, AdapterUse
from voicefinetune_inference.engine.scheduler import DecodeLoop

from voicefinetune.lora_voice import LoraVoiceConfig

from .engine_helpers import GREEDY, clone_prompt, decoded_codes, load_tiny
from .tape_graphs import TapeRecorder

TEXT = "A line the narrator reads."
OTHER = "Another, somewhat longer line that the hero answers with."
FRAMES = 20


@pytest.fixture(scope="module")
def voices(lora_voices) -> list[LoraVoice]:
    return [
        read_lora_voice(v.folder, f"voice:{v.speaker}", LoraVoiceConfig.read(v.folder)) for v in lora_voices
    ]


@pytest.fixture(scope="module")
def base(tiny_models) -> tts_model.LoadedModel:
    loaded = load_tiny(tiny_models, "base")
    AdapterBank.of(loaded.tts.model.talker, capacity=8)
    return loaded


def codes_of(loaded, items, engine: str = "fast") -> list[torch.Tensor]:
    with decoded_codes(loaded) as codes, fast_engine.engine_for(loaded.tts.model, engine):
        tts_model.call_upstream(loaded, items, max_new_tokens=FRAMES, **GREEDY)
    return codes


def lora_item(voice: LoraVoice, text: str = TEXT, strength: float = 1.0) -> tts_model.SpeechItem:
    use = AdapterUse(voice.key, voice.weights, strength)
    return tts_model.SpeechItem(text, "english", clone_prompt=voice.clone_prompt(), adapter=use)


def test_a_lora_row_gives_the_codes_of_the_adapter_merged_by_peft(tiny_models, lora_voices, voices, base):
    (got,) = codes_of(base, [lora_item(voices[0])])
    merged = load_tiny(tiny_models, "base")
    talker = PeftModel.from_pretrained(merged.tts.model.talker, str(lora_voices[0].folder)).merge_and_unload()
    merged.tts.model.talker = talker
    (want,) = codes_of(
        merged, [tts_model.SpeechItem(TEXT, "english", clone_prompt=voices[0].clone_prompt())], "upstream"
    )
    assert torch.equal(got, want)
    (plain,) = codes_of(base, [tts_model.SpeechItem(TEXT, "english", clone_prompt=voices[0].clone_prompt())])
    assert not torch.equal(
        got, plain
    )  # the adapter changes what is said: the comparison above means something


def test_each_row_of_a_batch_mixing_three_adapters_and_a_clone_voice_gets_its_own_codes(base, voices):
    items = [
        lora_item(voices[0], TEXT),
        tts_model.SpeechItem(OTHER, "english", clone_prompt=clone_prompt(base)),
        lora_item(voices[1], OTHER),
        lora_item(voices[2], TEXT),
    ]
    together = codes_of(base, items)
    alone = [codes_of(base, [item])[0] for item in items]
    for row, (got, want) in enumerate(zip(together, alone, strict=True)):
        assert torch.equal(got, want), f"row {row}"
    assert not torch.equal(
        together[0], together[3]
    )  # two voices, one text: different adapters, different codes


def test_voice_strength_zero_is_the_base_model(base, voices):
    (none,) = codes_of(base, [tts_model.SpeechItem(TEXT, "english", clone_prompt=voices[1].clone_prompt())])
    (zero,) = codes_of(base, [lora_item(voices[1], strength=0.0)])
    (one,) = codes_of(base, [lora_item(voices[1], strength=1.0)])
    assert torch.equal(zero, none)
    assert not torch.equal(one, none)


def test_the_bank_evicts_the_least_recently_used_adapter_beyond_its_capacity(tiny_models, voices):
    loaded = load_tiny(tiny_models, "base")
    bank = AdapterBank.of(loaded.tts.model.talker, capacity=2)
    first = codes_of(loaded, [lora_item(voices[0])])[0]
    codes_of(loaded, [lora_item(voices[1])])
    codes_of(loaded, [lora_item(voices[2])])  # voices[0] goes
    assert [entry["key"] for entry in bank.describe()] == [voices[2].key, voices[1].key]
    assert (bank.attaches, bank.evictions) == (3, 1)
    assert torch.equal(codes_of(loaded, [lora_item(voices[0])])[0], first)  # attached again, same voice


def test_lora_rows_in_the_continuous_loop_get_the_one_call_engines_codes(tiny_models, base, voices):
    """The loop's step runs fused q/k/v and gate/up projections: each row's adapter adds its update on its
    projection's slice, so a batch mixing adapters and a clone voice decodes as the one-call engine does."""
    items = [
        lora_item(voices[0], TEXT),
        tts_model.SpeechItem(OTHER, "english", clone_prompt=voices[1].clone_prompt()),
        lora_item(voices[2], OTHER, strength=0.5),
    ]
    want = codes_of(base, items)
    looped = load_tiny(tiny_models, "base")
    AdapterBank.of(looped.tts.model.talker, capacity=8)
    loop = DecodeLoop(looped.tts.model.talker, slots=4, name="lora")
    fast_engine.attach(looped.tts.model, loop)
    looped.decode_loop = loop
    try:
        with decoded_codes(looped) as got, fast_engine.decoding(looped):
            tts_model.call_upstream(looped, items, max_new_tokens=FRAMES, **GREEDY)
    finally:
        tts_model.release(looped)
    assert loop.frames > 0  # the loop did decode them
    assert len(got) == len(want) == 3
    for row, (g, w) in enumerate(zip(got, want, strict=True)):
        assert torch.equal(g, w), f"row {row}"


def test_with_graphs_frames_of_lora_rows_run_eagerly_and_keep_their_codes(tiny_models, base, voices):
    """A loop with graphs (recorded by the CPU stand-in `tape_graphs.TapeRecorder`) replays the frames of base
    rows; a frame with a LoRA row runs eagerly (a graph would freeze which adapter each row uses)."""
    plain = tts_model.SpeechItem(OTHER, "english", clone_prompt=voices[1].clone_prompt())
    items = [lora_item(voices[0], TEXT), plain]
    want_plain, want = codes_of(base, [plain]), codes_of(base, items)
    looped = load_tiny(tiny_models, "base")
    AdapterBank.of(looped.tts.model.talker, capacity=8)
    loop = DecodeLoop(looped.tts.model.talker, slots=4, name="lora", graphs=StepGraphs(TapeRecorder()))
    fast_engine.attach(looped.tts.model, loop)
    looped.decode_loop = loop
    try:
        with decoded_codes(looped) as got_plain, fast_engine.decoding(looped):
            tts_model.call_upstream(looped, [plain], max_new_tokens=FRAMES, **GREEDY)
        alone = (loop.frames, loop.graphs.replayed)
        with decoded_codes(looped) as got, fast_engine.decoding(looped):
            tts_model.call_upstream(looped, items, max_new_tokens=FRAMES, **GREEDY)
        mixed = (loop.frames - alone[0], loop.graphs.replayed - alone[1])
    finally:
        tts_model.release(looped)
    assert [len(got_plain), len(got)] == [1, 2]
    assert torch.equal(got_plain[0], want_plain[0])
    for row, (g, w) in enumerate(zip(got, want, strict=True)):
        assert torch.equal(g, w), f"row {row}"
    assert alone[0] > 0 and alone[1] == alone[0]  # the base row alone: every frame replayed
    assert mixed[0] > 0 and mixed[1] < mixed[0]  # beside a LoRA row: eager
