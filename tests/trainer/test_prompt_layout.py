"""One prompt: a fine-tuned voice is served by default with a prompt layout it was trained on."""

from __future__ import annotations

import numpy as np
import torch
from voicefinetune_inference.engine.tts_model import SpeechItem, call_upstream, load
from voicefinetune_trainer import sft
from voicefinetune_trainer.codes import AUTO_LANGUAGE, Sample, encode_samples
from voicefinetune_trainer.loss import talker_inputs
from voicefinetune_trainer.prepare import assign_layouts
from voicefinetune_trainer.sft import TrainConfig, train

from voicefinetune.devtools.sample_data import reference_clip, speech_clips
from voicefinetune.qwen import load_model
from voicefinetune.schemas import SAMPLE_RATE, FinetuneRequest, InferRequest, check_language

SPEAKER = "Hero"


def at_24k(clip) -> np.ndarray:
    import librosa

    if clip.sample_rate == SAMPLE_RATE:
        return clip.waveform.astype(np.float32)
    return librosa.resample(clip.waveform, orig_sr=clip.sample_rate, target_sr=SAMPLE_RATE).astype(np.float32)


def test_layouts_alternate_between_the_language_and_auto():
    sample = Sample("Hi.", torch.zeros((1, 16), dtype=torch.long), np.zeros(10, np.float32))
    layouts = assign_layouts([sample] * 4, ["English", "German", "Auto", "French"])
    assert [s.language for s in layouts] == ["English", AUTO_LANGUAGE, "Auto", AUTO_LANGUAGE]


def test_default_infer_request_is_served_with_a_prompt_the_voice_trained_on(
    tiny_models, cpu_settings, tmp_path, monkeypatch
):
    ref = at_24k(reference_clip())
    items = [(clip.text, at_24k(clip), ref) for clip in speech_clips(2)]
    base = load_model(tiny_models.base, cpu_settings)
    default_language = FinetuneRequest.model_fields["language"].default
    samples = assign_layouts(encode_samples(base, items), [default_language] * len(items))
    assert [s.language for s in samples] == [default_language, AUTO_LANGUAGE]

    seen = []
    real_build_batch = sft.build_batch

    def recording_build_batch(chosen, config):
        batch = real_build_batch(chosen, config)
        seen.append(batch)
        return batch

    monkeypatch.setattr(sft, "build_batch", recording_build_batch)
    config = TrainConfig(
        speaker_name=SPEAKER, num_epochs=1, batch_size=1, lr=1e-3, output_dir=tmp_path / "out"
    )
    final = train(tiny_models.base, samples, config=config, settings=cpu_settings, on_step=lambda _: None)
    assert len(seen) == 2

    # What the inference server feeds the talker for a default /infer request of this voice: upstream's
    # generate_custom_voice builds the prompt for both engines (the fast one replaces only the decode loop).
    request = InferRequest(text=items[0][0])
    served = load(str(final), cpu_settings)
    prefills: list[torch.Tensor] = []
    hook = served.tts.model.talker.register_forward_pre_hook(
        lambda module, args, kwargs: prefills.append(kwargs["inputs_embeds"]), with_kwargs=True
    )
    try:
        item = SpeechItem(request.text, check_language(request.language), request.instruct, speaker=SPEAKER)
        call_upstream(served, [item], max_new_tokens=2)
    finally:
        hook.remove()
    prefill = prefills[0]

    with torch.no_grad():
        trained_inputs = [talker_inputs(served.tts.model, batch) for batch in seen]
    matches = [
        index
        for index, inputs in enumerate(trained_inputs)
        if inputs.shape[1] >= prefill.shape[1]
        and torch.allclose(inputs[:, : prefill.shape[1]], prefill, atol=1e-6)
    ]
    assert len(matches) == 1, "the default /infer prompt must be one of the training inputs"
    # and it is the language layout: think, think_bos, the language's tag, think_eos after the 3 role tokens
    talker_config = served.tts.model.config.talker_config
    codec_head = seen[matches[0]].codec_ids[0, 3:7].tolist()
    assert codec_head == [
        talker_config.codec_think_id,
        talker_config.codec_think_bos_id,
        talker_config.codec_language_id[default_language.lower()],
        talker_config.codec_think_eos_id,
    ]
