"""The SFT core on the tiny Base model: loss, label alignment, checkpoints, resume, purge."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import librosa
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from voicefinetune_trainer.batching import (
    IGNORE_INDEX,
    ROLE_TOKENS,
    TRAILING_TOKENS,
    PreparedSample,
    assistant_text,
    build_batch,
)
from voicefinetune_trainer.checkpoint import (
    CODEC_EMBEDDING_KEY,
    OPTIMIZER_FILE,
    TEMP_PREFIX,
    TRAINER_STATE_FILE,
    ResumeCheckpointError,
    TrainingState,
    drop_training_state,
    export_checkpoint,
    purge_training_state,
    write_safetensors,
)
from voicefinetune_trainer.codes import Sample, encode_samples
from voicefinetune_trainer.loss import sft_loss, talker_inputs
from voicefinetune_trainer.prepare import prepare_samples
from voicefinetune_trainer.schedule import batch_order, fixed_batches
from voicefinetune_trainer.sft import StepEvent, TrainConfig, train

from voicefinetune.checkpoints import list_checkpoints
from voicefinetune.devtools.sample_data import Clip, reference_clip, speech_clips
from voicefinetune.qwen import import_qwen_tts
from voicefinetune.schemas import SAMPLE_RATE

SPEAKER = "Hero"
LR = 1e-3


def at_24k(clip: Clip) -> np.ndarray:
    if clip.sample_rate == SAMPLE_RATE:
        return clip.waveform.astype(np.float32)
    return librosa.resample(clip.waveform, orig_sr=clip.sample_rate, target_sr=SAMPLE_RATE).astype(np.float32)


@pytest.fixture(scope="module", autouse=True)
def one_cpu_thread():
    """The tiny model's ops are too small to gain from intra-op threads, and on a busy machine OpenMP threads
    waiting for each other make a step 10-50× slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def items() -> list[tuple[str, np.ndarray, np.ndarray]]:
    ref = at_24k(reference_clip())
    return [(clip.text, at_24k(clip), ref) for clip in speech_clips(4)]


@pytest.fixture(scope="module")
def samples(base_tts, items) -> list[Sample]:
    return encode_samples(base_tts, items, batch_size=3)


@dataclass
class Run:
    events: list[StepEvent]
    final: Path
    output_dir: Path


def run_training(model_path, samples, settings, output_dir, **options) -> Run:
    events: list[StepEvent] = []
    config = TrainConfig(
        speaker_name=options.pop("speaker_name", SPEAKER),
        num_epochs=options.pop("num_epochs", 2),
        batch_size=options.pop("batch_size", 2),
        lr=options.pop("lr", LR),
        output_dir=output_dir,
        **options,
    )
    final = train(model_path, samples, config=config, settings=settings, on_step=events.append)
    return Run(events, final, output_dir)


@pytest.fixture(scope="module")
def trained(tiny_models, samples, cpu_settings, tmp_path_factory) -> Run:
    return run_training(
        tiny_models.base, samples, cpu_settings, tmp_path_factory.mktemp("run") / "output", keep_checkpoints=2
    )


def epoch_losses(events: list[StepEvent]) -> dict[int, float]:
    by_epoch: dict[int, list[float]] = {}
    for event in events:
        by_epoch.setdefault(event.epoch, []).append(event.loss)
    return {epoch: sum(values) / len(values) for epoch, values in by_epoch.items()}


# ----- audio codes -----------------------------------------------------------------------------------------------


def test_encode_samples_batches_in_order(base_tts, items, samples):
    one_by_one = encode_samples(base_tts, items, batch_size=1)
    for (text, audio, _), sample, single in zip(items, samples, one_by_one, strict=True):
        assert sample.text == text
        assert sample.audio_codes.dtype == torch.long
        assert sample.audio_codes.shape == (math.ceil(len(audio) / 1920), 16)
        assert torch.equal(sample.audio_codes, single.audio_codes)
    assert len({tuple(s.audio_codes[:, 0].tolist()) for s in samples}) == len(samples)  # not trivial codes


def test_encode_samples_rejects_empty_text(base_tts, items):
    with pytest.raises(ValueError, match="item 1: empty text"):
        encode_samples(base_tts, [items[0], (" ", items[1][1], items[1][2])])


# ----- loss ------------------------------------------------------------------------------------------------------


def test_talker_loss_is_shifted_once(base_tts, samples):
    """The model's loss (ForCausalLMLoss) must equal logits[t] scored against the label at t + 1."""
    model = base_tts.model
    batch = build_batch(prepare_samples(base_tts, samples[:2]), model.config)
    with torch.no_grad():
        parts = sft_loss(model, batch)
        logits = model.talker(
            inputs_embeds=talker_inputs(model, batch),
            attention_mask=batch.attention_mask,
            use_cache=False,
        ).logits
    targets = batch.labels[:, 1:]
    manual = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX
    )
    assert torch.allclose(parts.talker, manual, atol=1e-5)
    assert torch.allclose(parts.total, parts.talker + 0.3 * parts.sub_talker)
    # every frame and the final eos are targets: frames + 1 per sample
    assert int((batch.labels != IGNORE_INDEX).sum()) == sum(s.audio_codes.shape[0] + 1 for s in samples[:2])


def test_loss_goes_down_over_two_epochs(trained):
    assert [(e.epoch, e.step, e.global_step) for e in trained.events] == [
        (0, 0, 1),
        (0, 1, 2),
        (1, 0, 3),
        (1, 1, 4),
    ]
    assert all(e.total_epochs == 2 for e in trained.events)
    losses = epoch_losses(trained.events)
    assert losses[1] < losses[0]
    assert trained.events[-1].loss < trained.events[0].loss


def test_training_is_deterministic_with_a_seed(tiny_models, samples, cpu_settings, tmp_path):
    first = run_training(tiny_models.base, samples, cpu_settings, tmp_path / "a", num_epochs=1, seed=7)
    second = run_training(tiny_models.base, samples, cpu_settings, tmp_path / "b", num_epochs=1, seed=7)
    assert [e.loss for e in first.events] == [e.loss for e in second.events]
    assert (first.final / "model.safetensors").read_bytes() == (
        second.final / "model.safetensors"
    ).read_bytes()


def test_overfit_sample_is_generated_back_exactly(tiny_models, base_tts, items, cpu_settings, tmp_path):
    """Label alignment end to end: after overfitting one short clip, greedy custom-voice generation from the
    exported checkpoint reproduces all 16 codebooks and stops where the clip ends. (A double shift, as in the
    upstream recipe, generates different codes and misses the end.)"""
    text, audio, ref = items[0]
    clip = encode_samples(base_tts, [("Hi there.", audio[: 6 * 1920], ref)])[0]
    run = run_training(
        tiny_models.base, [clip] * 25, cpu_settings, tmp_path / "out", num_epochs=1, batch_size=1, lr=1e-2
    )
    tts = import_qwen_tts().Qwen3TTSModel.from_pretrained(str(run.final))
    ids = tts.processor(text=assistant_text("Hi there."), return_tensors="pt")["input_ids"]
    codes, _ = tts.model.generate(
        input_ids=[ids],
        languages=["auto"],
        speakers=[SPEAKER],
        non_streaming_mode=True,
        do_sample=False,
        subtalker_dosample=False,
        repetition_penalty=1.0,
        max_new_tokens=12,
    )
    assert torch.equal(codes[0].cpu(), clip.audio_codes)


@pytest.mark.parametrize("language", ["auto", "English"])
def test_training_prompt_matches_the_generate_prefill(language, trained, samples):
    """The talker inputs up to the codec bos are exactly what `generate_custom_voice` feeds the talker."""
    tts = import_qwen_tts().Qwen3TTSModel.from_pretrained(str(trained.final))
    model = tts.model
    slot = model.config.talker_config.spk_id["hero"]
    ids = tts.processor(text=assistant_text(samples[0].text), return_tensors="pt")["input_ids"]
    prepared = PreparedSample(
        role_ids=ids[0, :ROLE_TOKENS],
        text_ids=ids[0, ROLE_TOKENS:-TRAILING_TOKENS],
        codes=samples[0].audio_codes,
        speaker_embedding=model.talker.get_input_embeddings().weight[slot].detach(),
        language_id=None
        if language == "auto"
        else model.config.talker_config.codec_language_id[language.lower()],
    )
    with torch.no_grad():
        ours = talker_inputs(model, build_batch([prepared], model.config))

    prefills: list[torch.Tensor] = []
    hook = model.talker.register_forward_pre_hook(
        lambda module, args, kwargs: prefills.append(kwargs["inputs_embeds"]), with_kwargs=True
    )
    try:
        tts.generate_custom_voice(samples[0].text, speaker=SPEAKER, language=language, max_new_tokens=2)
    finally:
        hook.remove()
    prefill = prefills[0]
    head = 5 if language == "auto" else 6  # tags, speaker, codec_pad
    assert prefill.shape[1] == ROLE_TOKENS + head + prepared.text_ids.numel() + 2  # + tts_eos, codec bos
    assert torch.allclose(ours[:, : prefill.shape[1]], prefill, atol=1e-6)


def test_unknown_language_is_refused(base_tts, samples):
    sample = Sample(samples[0].text, samples[0].audio_codes, samples[0].ref_audio, language="Klingon")
    with pytest.raises(ValueError, match="language 'Klingon' is not supported"):
        prepare_samples(base_tts, [sample])


# ----- checkpoints -----------------------------------------------------------------------------------------------


def test_a_checkpoint_per_epoch_with_trainer_state_in_the_latest_only(trained):
    assert [(epoch, path.name) for epoch, path in list_checkpoints(trained.output_dir)] == [
        (0, "checkpoint-epoch-0"),
        (1, "checkpoint-epoch-1"),
    ]
    assert trained.final == trained.output_dir / "checkpoint-epoch-1"
    earlier = trained.output_dir / "checkpoint-epoch-0"
    assert not (earlier / OPTIMIZER_FILE).exists() and not (earlier / TRAINER_STATE_FILE).exists()
    assert not (trained.final / OPTIMIZER_FILE).exists()  # a finished run writes optimizer state nowhere
    state = TrainingState.read(trained.final)
    assert state is not None and (state.epoch, state.global_step, state.speaker_name) == (1, 4, SPEAKER)
    assert not [p for p in trained.output_dir.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_only_the_newest_epoch_checkpoints_stay_on_disk(tiny_models, samples, cpu_settings, tmp_path):
    run = run_training(
        tiny_models.base, samples[:2], cpu_settings, tmp_path / "output", num_epochs=3, keep_checkpoints=1
    )
    assert [path.name for _, path in list_checkpoints(run.output_dir)] == ["checkpoint-epoch-2"]
    assert run.final == run.output_dir / "checkpoint-epoch-2"


def test_export_is_a_custom_voice_folder(trained, tiny_models, base_tts, items):
    config = json.loads((trained.final / "config.json").read_text())
    slot = config["talker_config"]["spk_id"]["hero"]
    assert config["tts_model_type"] == "custom_voice"
    assert config["talker_config"]["spk_id"] == {"hero": slot}
    assert config["talker_config"]["spk_is_dialect"] == {"hero": False}
    assert slot >= config["talker_config"]["code_predictor_config"]["vocab_size"]
    weights = load_file(trained.final / "model.safetensors")
    assert not [name for name in weights if name.startswith("speaker_encoder.")]
    expected = base_tts.model.extract_speaker_embedding(items[0][2], SAMPLE_RATE).float()
    assert torch.allclose(weights[CODEC_EMBEDDING_KEY][slot], expected, atol=1e-5)
    for name in (
        "speech_tokenizer/model.safetensors",
        "speech_tokenizer/config.json",
        "tokenizer_config.json",
    ):
        assert (trained.final / name).read_bytes() == (Path(tiny_models.base) / name).read_bytes()


def test_export_loads_as_custom_voice_and_speaks(trained):
    tts = import_qwen_tts().Qwen3TTSModel.from_pretrained(str(trained.final))
    assert tts.model.tts_model_type == "custom_voice"
    assert tts.get_supported_speakers() == [SPEAKER.lower()]
    wavs, rate = tts.generate_custom_voice("Hello there, this is my voice.", speaker=SPEAKER)
    assert rate == SAMPLE_RATE
    assert wavs[0].size > 1920 and float(np.sqrt(np.mean(wavs[0] ** 2))) > 1e-3


def test_safetensors_writer_round_trips(tmp_path):
    tensors = {
        "a": torch.randn(3, 5),
        "b": torch.arange(7, dtype=torch.int64),
        "c": torch.tensor(2.5),
        "d": torch.randn(4, 2).t(),  # not contiguous
        "e": torch.tensor([True, False]),
    }
    dtypes = {"a": torch.bfloat16, "b": torch.int64, "c": torch.float32, "d": torch.float16, "e": torch.bool}
    write_safetensors(tmp_path / "w.safetensors", [(n, t, dtypes[n]) for n, t in tensors.items()])
    loaded = load_file(tmp_path / "w.safetensors")
    for name, tensor in tensors.items():
        assert loaded[name].dtype == dtypes[name]
        assert torch.equal(loaded[name], tensor.to(dtypes[name]))
    with safe_open(str(tmp_path / "w.safetensors"), framework="pt") as handle:
        assert handle.metadata() == {"format": "pt"}


def test_failed_write_leaves_no_partial_folder_and_keeps_the_previous_one(base_tts, tiny_models, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(tiny_models.base, base)
    output = tmp_path / "output"
    embedding = torch.zeros(base_tts.model.config.talker_config.hidden_size)
    good = export_checkpoint(
        base_tts.model,
        base_dir=base,
        output_dir=output,
        epoch=0,
        speaker_name=SPEAKER,
        speaker_slot=1000,
        speaker_embedding=embedding,
    )
    before = {p.relative_to(good): p.read_bytes() for p in good.rglob("*") if p.is_file()}

    (base / "speech_tokenizer" / "zz_lost.bin").symlink_to(tmp_path / "nowhere")  # a broken base folder
    for epoch in (0, 1):  # a new epoch, and the one that exists already
        with pytest.raises(FileNotFoundError):
            export_checkpoint(
                base_tts.model,
                base_dir=base,
                output_dir=output,
                epoch=epoch,
                speaker_name=SPEAKER,
                speaker_slot=1000,
                speaker_embedding=embedding + 1,
            )

    assert sorted(p.name for p in output.iterdir()) == ["checkpoint-epoch-0"]
    assert {p.relative_to(good): p.read_bytes() for p in good.rglob("*") if p.is_file()} == before


# ----- resume ----------------------------------------------------------------------------------------------------


def test_resume_with_state_continues_epochs_steps_and_weights(
    trained, tiny_models, samples, cpu_settings, tmp_path
):
    output = tmp_path / "output"
    resumed = run_training(
        tiny_models.base, samples, cpu_settings, output, num_epochs=1, resume_from=trained.final
    )
    assert [(e.epoch, e.global_step, e.total_epochs) for e in resumed.events] == [(2, 5, 3), (2, 6, 3)]
    assert resumed.final == output / "checkpoint-epoch-2"
    assert epoch_losses(resumed.events)[2] < epoch_losses(trained.events)[0]
    slot = json.loads((trained.final / "config.json").read_text())["talker_config"]["spk_id"]["hero"]
    config = json.loads((resumed.final / "config.json").read_text())
    assert config["talker_config"]["spk_id"] == {"hero": slot}
    assert TrainingState.read(resumed.final).global_step == 6


def test_resume_from_weights_only_restarts_numbering(trained, tiny_models, samples, cpu_settings, tmp_path):
    weights_only = tmp_path / "published"
    shutil.copytree(trained.final, weights_only)
    drop_training_state(weights_only)  # as the pipeline publishes it
    assert not (weights_only / OPTIMIZER_FILE).exists()
    resumed = run_training(
        tiny_models.base, samples, cpu_settings, tmp_path / "output", num_epochs=1, resume_from=weights_only
    )
    assert [(e.epoch, e.global_step) for e in resumed.events] == [(0, 1), (0, 2)]
    # same seed and epoch → same first batch as the run from the base model, which started higher
    assert resumed.events[0].loss < trained.events[0].loss


def test_resume_from_a_folder_without_weights_is_refused(tiny_models, samples, cpu_settings, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ResumeCheckpointError, match="no model.safetensors"):
        run_training(
            tiny_models.base, samples, cpu_settings, tmp_path / "out", resume_from=tmp_path / "empty"
        )


# ----- purge -----------------------------------------------------------------------------------------------------


def test_purge_keeps_only_the_final_weights(trained, tmp_path):
    output = tmp_path / "output"
    shutil.copytree(trained.output_dir, output)
    (output / f"{TEMP_PREFIX}checkpoint-epoch-2-crashed").mkdir()
    final = purge_training_state(output)
    assert final == output / "checkpoint-epoch-1"
    assert [p.name for p in output.iterdir()] == ["checkpoint-epoch-1"]
    assert not (final / OPTIMIZER_FILE).exists()
    assert (
        TrainingState.read(final).epoch == 1
    )  # a run resumed from the published model continues the numbering
    assert (final / "model.safetensors").read_bytes() == (trained.final / "model.safetensors").read_bytes()
    assert purge_training_state(tmp_path / "nothing-here") is None


# ----- configuration ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_epochs": 0}, "num_epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": 0.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"speaker_name": " "}, "speaker_name"),
        ({"grad_clip": 0.0}, "grad_clip"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps"),
        ({"recipe": "nope"}, "unknown training recipe 'nope'"),
    ],
)
def test_train_config_refuses_bad_values(change, message, tmp_path):
    values = {"speaker_name": SPEAKER, "num_epochs": 1, "batch_size": 1, "lr": 1e-3, "output_dir": tmp_path}
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{**values, **change})


def test_training_refuses_a_non_base_model(tiny_models, samples, cpu_settings, tmp_path):
    with pytest.raises(ValueError, match="starts from a Base model"):
        run_training(tiny_models.custom_voice, samples, cpu_settings, tmp_path / "out")


@pytest.mark.parametrize(("count", "batch_size"), [(4, 1), (6, 2), (6, 4), (7, 3), (5, 5)])
@pytest.mark.parametrize(("first_epoch", "last_epoch"), [(0, 1), (0, 4), (3, 5), (2, 2)])
def test_batches_are_fixed_and_the_last_epoch_ends_with_the_first_batch(
    count, batch_size, first_epoch, last_epoch
):
    batches = fixed_batches(count, batch_size, seed=0)
    assert sorted(i for batch in batches for i in batch) == list(range(count))
    assert all(len(batch) == batch_size for batch in batches[:-1])
    orders = {
        e: batch_order(len(batches), seed=0, epoch=e, first_epoch=first_epoch, last_epoch=last_epoch)
        for e in range(first_epoch, last_epoch + 1)
    }
    assert all(sorted(order) == list(range(len(batches))) for order in orders.values())
    if first_epoch != last_epoch:
        # the first and the last reported loss are measured on the same clips
        assert orders[last_epoch][-1] == orders[first_epoch][0]


@pytest.mark.parametrize("batch_size", [1, 3])
def test_loss_goes_down_even_at_the_default_lr(tiny_models, samples, cpu_settings, tmp_path, batch_size):
    """At lr 1e-6 one run lowers the loss far less than it differs between clips: the first and the last step
    must still compare the same clips, and every epoch the same batches."""
    run = run_training(
        tiny_models.base, samples, cpu_settings, tmp_path / "out", lr=1e-6, batch_size=batch_size
    )
    assert run.events[-1].loss < run.events[0].loss, [e.loss for e in run.events]
    losses = epoch_losses(run.events)
    assert losses[1] < losses[0], losses
