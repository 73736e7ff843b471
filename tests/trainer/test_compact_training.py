"""The compact training recipe: its optimizer (bf16 moments, fp32-precise bf16 weights), gradient accumulation,
the GPU fit check, and optimizer state written only when a run stops early."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from voicefinetune_trainer.batching import build_batch
from voicefinetune_trainer.checkpoint import OPTIMIZER_FILE, TrainingState
from voicefinetune_trainer.codes import encode_samples
from voicefinetune_trainer.fit import GIB, WontFit, check_training_fits, estimate_peak
from voicefinetune_trainer.loss import sft_loss
from voicefinetune_trainer.optim import (
    EXTENSION,
    STEP_TEMPORARY_BYTES,
    CompactAdamW,
    bf16_spacing,
    master_weight,
    round_stochastically,
)
from voicefinetune_trainer.prepare import prepare_samples
from voicefinetune_trainer.recipe import RECIPES, Recipe
from voicefinetune_trainer.sft import TrainConfig, train
from voicefinetune_trainer.step import train_step, trainable_parameters

from voicefinetune.checkpoints import list_checkpoints
from voicefinetune.devtools.op_count import OpCounter
from voicefinetune.devtools.sample_data import reference_clip, speech_clips
from voicefinetune.qwen import load_model
from voicefinetune.schemas import SAMPLE_RATE

SPEAKER = "Hero"


def run_steps(optimizer_factory, param: torch.Tensor, grads: list[torch.Tensor]) -> torch.nn.Parameter:
    parameter = torch.nn.Parameter(param.clone())
    optimizer = optimizer_factory([parameter])
    for grad in grads:
        parameter.grad = grad.to(parameter.dtype)
        optimizer.step()
    return parameter, optimizer


@pytest.fixture
def grads() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(64, 32, generator=generator) for _ in range(20)]


@pytest.fixture
def weights() -> torch.Tensor:
    return torch.randn(64, 32, generator=torch.Generator().manual_seed(1)) * 0.02


def test_with_fp32_state_and_weights_it_is_torch_adamw(weights, grads):
    ours, _ = run_steps(
        lambda p: CompactAdamW(p, lr=1e-3, weight_decay=0.01, state_dtype=torch.float32), weights, grads
    )
    reference, _ = run_steps(
        lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.01, foreach=False), weights, grads
    )
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-7)


def test_a_closure_gives_the_gradients_of_the_step_and_its_loss_as_torch_adamw_does(weights):
    target = torch.randn(64, 32, generator=torch.Generator().manual_seed(2))

    def run(optimizer_factory):
        parameter = torch.nn.Parameter(weights.clone())
        optimizer = optimizer_factory([parameter])

        def closure():
            optimizer.zero_grad()
            loss = ((parameter - target) ** 2).sum()
            loss.backward()
            return loss

        return parameter, torch.stack([optimizer.step(closure) for _ in range(3)])

    ours, our_losses = run(lambda p: CompactAdamW(p, lr=1e-3, weight_decay=0.01, state_dtype=torch.float32))
    reference, reference_losses = run(
        lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.01, foreach=False)
    )
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-7)
    torch.testing.assert_close(our_losses, reference_losses, rtol=0, atol=1e-5)


def test_bf16_moments_stay_close_to_fp32_moments(weights, grads):
    ours, optimizer = run_steps(lambda p: CompactAdamW(p, lr=1e-3, weight_decay=0.01), weights, grads)
    reference, _ = run_steps(lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.01), weights, grads)
    assert optimizer.state[ours]["exp_avg"].dtype == torch.bfloat16
    most = 1e-3 * len(grads)  # AdamW moves a weight by at most about lr per step
    assert (reference - weights).abs().max() > most / 4
    assert (ours - reference).abs().max() < 0.01 * most


def test_bf16_weights_keep_updates_far_below_a_bf16_step(weights, grads):
    """lr 1e-6 at |w| ≈ 0.02 is about 1/100 of a bf16 step: plain bf16 AdamW rounds every update away; the extension
    keeps the fp32 master value."""
    grads = [grads[0]] * 50  # a steady direction: the fp32 reference moves each weight by about 50 × lr
    bf16 = weights.to(torch.bfloat16)
    start = bf16.float()
    reference, _ = run_steps(lambda p: torch.optim.AdamW(p, lr=1e-6, weight_decay=0.01), start, grads)
    plain, _ = run_steps(lambda p: torch.optim.AdamW(p, lr=1e-6, weight_decay=0.01), bf16, grads)
    moved = (reference - start).abs()
    assert moved.mean() > 4e-5
    assert (plain.float() == start).float().mean() > 0.95  # plain bf16: the training is lost
    # bf16 weights + extension hold the fp32 master weight (fp32 moments isolate the weight storage) ...
    exact, optimizer = run_steps(
        lambda p: CompactAdamW(p, lr=1e-6, weight_decay=0.01, state_dtype=torch.float32), bf16, grads
    )
    assert exact.dtype == torch.bfloat16
    master = master_weight(exact, optimizer.state[exact][EXTENSION])
    assert ((master - reference).abs() <= 1e-3 * moved).all()
    assert torch.equal(exact.detach(), master.to(torch.bfloat16))  # the model computes with its nearest bf16
    # ... and with bf16 moments (the compact default, rounded stochastically) every weight still moves by its
    # update: to within 2 % each, 0.5 % on average
    ours, optimizer = run_steps(lambda p: CompactAdamW(p, lr=1e-6, weight_decay=0.01), bf16, grads)
    error = (master_weight(ours, optimizer.state[ours][EXTENSION]) - reference).abs()
    assert (error <= 0.02 * moved).all() and error.mean() <= 0.005 * moved.mean()


def test_resume_state_has_the_moments_but_not_the_weight_extension(weights, grads):
    ours, optimizer = run_steps(lambda p: CompactAdamW(p, lr=1e-6), weights.to(torch.bfloat16), grads[:2])
    saved = optimizer.resume_state_dict()
    assert set(saved["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    again = CompactAdamW([ours], lr=1e-6)
    again.load_state_dict(copy.deepcopy(saved))
    assert again.state[ours]["exp_avg"].dtype == torch.bfloat16
    assert torch.equal(again.state[ours]["exp_avg_sq"], optimizer.state[ours]["exp_avg_sq"])


def test_a_resumed_optimizer_keeps_bf16_moments_and_steps_as_if_it_never_stopped(weights, grads):
    """fp32 weights (the CPU recipe): torch's load_state_dict casts loaded moments to the parameter's dtype, fp32."""
    ours, optimizer = run_steps(lambda p: CompactAdamW(p, lr=1e-3), weights, grads[:2])
    resumed = torch.nn.Parameter(ours.detach().clone())
    again = CompactAdamW([resumed], lr=1e-3)
    again.load_state_dict(copy.deepcopy(optimizer.resume_state_dict()))
    assert {again.state[resumed][key].dtype for key in ("exp_avg", "exp_avg_sq")} == {torch.bfloat16}
    for parameter, stepping in ((ours, optimizer), (resumed, again)):
        parameter.grad = grads[2]
        with torch.random.fork_rng():
            torch.manual_seed(3)
            stepping.step()
    assert torch.equal(resumed, ours)
    for key in ("exp_avg", "exp_avg_sq"):
        assert again.state[resumed][key].dtype == torch.bfloat16
        assert torch.equal(again.state[resumed][key], optimizer.state[ours][key])


def test_stochastic_rounding_is_unbiased_between_bf16_neighbours():
    """A value a fraction p of the way from one bf16 number to the next (in magnitude) must round up with probability
    p, so that the mean of many roundings is the value itself. Round-to-nearest, or noise of the wrong range, is off
    by a large part of a bf16 step."""
    lows = torch.tensor(
        [1.0, -0.0234375, 3.0517578125e-4, -752.0], dtype=torch.bfloat16
    )  # both signs, 4 binades
    fractions = (
        torch.tensor([1, 4096, 21845, 32768, 61440], dtype=torch.float32) / 65536
    )  # exact in fp32 here
    repeats = 1 << 16
    low = lows.float()[:, None]
    step = low.sign() * bf16_spacing(lows)[:, None]  # to the next bf16 number away from zero
    values = low + fractions * step
    with torch.random.fork_rng():
        torch.manual_seed(0)
        rounded = round_stochastically(values[..., None].expand(-1, -1, repeats).contiguous()).double()
    assert ((rounded == low[..., None]) | (rounded == (low + step)[..., None])).all()
    # the count rounded up is binomial(repeats, p): 6 standard deviations of the mean, in units of the bf16 step
    error = (rounded.mean(dim=-1) - values).abs() / step.abs()  # float64: exact enough for p = 1/65536
    assert (error <= 6 * (fractions * (1 - fractions) / repeats).sqrt()).all(), error


def test_the_bf16_second_moment_keeps_decaying_over_a_long_run():
    """With β2 = 0.999 one step shrinks exp_avg_sq by 0.1 %, a quarter of a bf16 step (1/256): round-to-nearest
    rounds every decay away, and with shrinking gradients the moment stays near its peak. Stochastic rounding
    follows the exact moment on average."""
    steps, decay = 2000, 0.998
    direction = torch.randn(16, 16, generator=torch.Generator().manual_seed(2))
    parameter = torch.nn.Parameter(torch.zeros(16, 16))
    optimizer = CompactAdamW([parameter], lr=1e-3)
    exact = torch.zeros(16, 16, dtype=torch.float64)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for step in range(steps):
            parameter.grad = direction * decay**step
            optimizer.step()
            exact = exact * 0.999 + 0.001 * parameter.grad.double() ** 2
    ratio = optimizer.state[parameter]["exp_avg_sq"].double() / exact
    assert abs(ratio.mean().item() - 1) < 0.02, ratio.mean()
    assert (ratio - 1).abs().max() < 0.5, ratio


def several_tensors(dtype: torch.dtype) -> list[torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(4)
    shapes = [(64, 32), (32, 16), (16, 16), (64,), (7, 3), (32,), (5,)]
    return [
        torch.nn.Parameter((torch.randn(shape, generator=generator) * 0.02).to(dtype)) for shape in shapes
    ]


def step_several(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter]) -> None:
    generator = torch.Generator().manual_seed(5)
    for _ in range(5):
        for param in params:
            param.grad = torch.randn(param.shape, generator=generator).to(param.dtype)
        optimizer.step()


def test_tensors_joined_into_chunks_update_as_they_would_one_at_a_time():
    """The step joins tensors into flat buffers; element by element it is the same AdamW: fp32 weights match torch's
    AdamW, and a mix of bf16 weights (with their extensions) and fp32 weights matches one tensor at a time."""
    ours = several_tensors(torch.float32)
    reference = [torch.nn.Parameter(param.detach().clone()) for param in ours]
    step_several(CompactAdamW(ours, lr=1e-3, state_dtype=torch.float32), ours)
    step_several(torch.optim.AdamW(reference, lr=1e-3, foreach=False), reference)
    for param, expected in zip(ours, reference, strict=True):
        torch.testing.assert_close(param, expected, rtol=0, atol=1e-7)

    joined = several_tensors(torch.bfloat16) + several_tensors(torch.float32)
    alone = [torch.nn.Parameter(param.detach().clone()) for param in joined]
    joined_optimizer = CompactAdamW(joined, lr=1e-3, state_dtype=torch.float32)
    alone_optimizer = CompactAdamW(alone, lr=1e-3, state_dtype=torch.float32, chunk_elements=1)
    step_several(joined_optimizer, joined)
    step_several(alone_optimizer, alone)
    assert any(
        param.dtype == torch.bfloat16 and (param.detach() != start).any()
        for param, start in zip(joined, several_tensors(torch.bfloat16), strict=False)
    )
    for param, expected in zip(joined, alone, strict=True):
        assert torch.equal(param, expected)
        ours_state, expected_state = joined_optimizer.state[param], alone_optimizer.state[expected]
        assert ours_state.keys() == expected_state.keys()
        assert all(torch.equal(ours_state[key], expected_state[key]) for key in ours_state if key != "step")


def test_small_tensors_share_the_operations_of_one_step():
    """One tensor at a time, every tensor costs a step's operations (≈ 45: 18,000 per step for the 1.7B's 403
    trained tensors); tensors joined into one chunk cost them once."""

    def computing_ops(small: int, **options) -> int:
        params = [torch.nn.Parameter(torch.zeros(small * 8 + 8, dtype=torch.bfloat16))]  # sets the chunk size
        params += [torch.nn.Parameter(torch.zeros(8, dtype=torch.bfloat16)) for _ in range(small)]
        optimizer = CompactAdamW(params, lr=1e-3, **options)
        for param in params:
            param.grad = torch.ones_like(param)
        optimizer.step()  # the state now exists
        with OpCounter() as counter:
            optimizer.step()
        return counter.computing

    per_tensor = computing_ops(0)
    assert per_tensor > 30
    assert computing_ops(50, chunk_elements=1) == 51 * per_tensor
    assert computing_ops(50) == computing_ops(2) < 3 * per_tensor


def test_the_fit_check_counts_the_measured_temporaries_of_the_optimizer_step(base_tts):
    """The most the step allocates per element of its largest chunk: one tensor alone, and tensors of that many
    elements joined, for bf16 and fp32 weights (MemTracker on CPU, with the weights, gradients and state known)."""
    from torch.distributed._tools.mem_tracker import MemTracker

    largest = 1 << 16
    measured = []
    for dtype in (torch.bfloat16, torch.float32):
        generator = torch.Generator().manual_seed(6)
        params = [
            torch.nn.Parameter(torch.randn(size, generator=generator).to(dtype))
            for size in [largest] + [largest // 8] * 8
        ]
        optimizer = CompactAdamW(params, lr=1e-3)
        for param in params:
            param.grad = torch.randn(param.shape, generator=generator).to(dtype)
        optimizer.step()  # the state now exists
        tracker = MemTracker()
        tracker.track_external(optimizer, *params, *[param.grad for param in params])
        with tracker:
            (before,) = tracker.get_tracker_snapshot("current").values()
            optimizer.step()
            (peak,) = tracker.get_tracker_snapshot("peak").values()
        measured.append((peak["Total"] - before["Total"]) / largest)
    assert max(measured) <= STEP_TEMPORARY_BYTES < max(measured) + 4, measured

    estimate = estimate_peak(
        base_tts.model, RECIPES["compact"], device_type="cuda", batch_size=1, positions=10, frames=5
    )
    trained = trainable_parameters(base_tts.model, freeze_text_embedding=True)
    assert estimate.temporaries == max(param.numel() for param in trained) * STEP_TEMPORARY_BYTES


# ----- on the tiny model ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def samples(base_tts):
    import librosa

    def at_24k(clip) -> np.ndarray:
        wave = clip.waveform.astype(np.float32)
        return (
            wave
            if clip.sample_rate == SAMPLE_RATE
            else librosa.resample(wave, orig_sr=clip.sample_rate, target_sr=SAMPLE_RATE)
        )

    ref = at_24k(reference_clip())
    return encode_samples(base_tts, [(clip.text, at_24k(clip), ref) for clip in speech_clips(4)])


def test_accumulating_two_batches_is_one_batch_of_both(tiny_models, cpu_settings, base_tts, samples):
    """The same clip twice: one batch of two and two accumulated batches of one give the same update."""
    prepared = prepare_samples(base_tts, samples[:1])
    results = []
    for batches in ([prepared * 2], [prepared, prepared]):
        model = load_model(tiny_models.base, cpu_settings).model
        parameters = trainable_parameters(model, freeze_text_embedding=True)
        optimizer = CompactAdamW(parameters, lr=1e-3, state_dtype=torch.float32)
        model.talker.train()
        group = [build_batch(chosen, model.config) for chosen in batches]
        train_step(model, optimizer, batch=group, parameters=parameters, grad_clip=1.0, autocast_dtype=None)
        results.append(dict(model.named_parameters()))
    for name, value in results[0].items():
        torch.testing.assert_close(value, results[1][name], rtol=1e-4, atol=1e-6, msg=name)


def test_gradient_accumulation_counts_optimizer_steps(tiny_models, samples, cpu_settings, tmp_path):
    events = []
    config = TrainConfig(
        speaker_name=SPEAKER,
        num_epochs=2,
        batch_size=1,
        lr=1e-3,
        output_dir=tmp_path / "out",
        gradient_accumulation_steps=2,
    )
    train(tiny_models.base, samples, config=config, settings=cpu_settings, on_step=events.append)
    assert [(e.epoch, e.step, e.global_step) for e in events] == [(0, 0, 1), (0, 1, 2), (1, 0, 3), (1, 1, 4)]
    assert events[-1].loss < events[0].loss


def test_text_embedding_is_frozen_and_everything_else_but_the_speaker_encoder_trains(
    tiny_models, cpu_settings
):
    model = load_model(tiny_models.base, cpu_settings).model
    trained = {id(p) for p in trainable_parameters(model, freeze_text_embedding=True)}
    frozen = sorted(name for name, p in model.named_parameters() if id(p) not in trained)
    assert frozen and all(
        name.startswith(("speaker_encoder.", "talker.model.text_embedding.")) for name in frozen
    )
    assert "talker.model.text_embedding.weight" in frozen
    assert not any(name.startswith("talker.text_projection") for name in frozen)


def test_fit_check_refuses_a_run_that_cannot_fit_with_what_to_change(base_tts, samples):
    prepared = prepare_samples(base_tts, samples)
    compact, seed = RECIPES["compact"], RECIPES["seed"]
    estimate = check_training_fits(
        base_tts.model, compact, prepared, batch_size=2, gradient_accumulation_steps=1, free_bytes=80 * GIB
    )
    assert 0 < estimate.total < 80 * GIB
    with pytest.raises(WontFit) as refused:
        check_training_fits(
            base_tts.model,
            seed,
            prepared,
            batch_size=4,
            gradient_accumulation_steps=1,
            free_bytes=estimate.total // 2,
        )
    message = str(refused.value)
    assert "training will not fit in GPU memory" in message
    assert "lower batch_size to 2 with gradient_accumulation_steps 2" in message
    assert "VFT_TRAIN_RECIPE=compact" in message and "VFT_TRAIN_FIT_CHECK=0" in message


def test_compact_estimate_is_below_the_seed_recipe(base_tts):
    shape = {"device_type": "cuda", "batch_size": 2, "positions": 500, "frames": 375}
    compact = estimate_peak(base_tts.model, RECIPES["compact"], **shape)
    seed = estimate_peak(base_tts.model, RECIPES["seed"], **shape)
    assert compact.optimizer < seed.optimizer and compact.gradients < seed.gradients
    assert compact.total < seed.total


class Stop(Exception):
    pass


def test_a_run_stopped_early_leaves_optimizer_state_for_resume(tiny_models, samples, cpu_settings, tmp_path):
    def stop_in_second_epoch(event):
        if event.epoch == 1:
            raise Stop

    config = TrainConfig(
        speaker_name=SPEAKER, num_epochs=3, batch_size=2, lr=1e-3, output_dir=tmp_path / "out"
    )
    with pytest.raises(Stop):
        train(tiny_models.base, samples, config=config, settings=cpu_settings, on_step=stop_in_second_epoch)
    ((epoch, latest),) = list_checkpoints(tmp_path / "out")
    assert epoch == 0 and (latest / OPTIMIZER_FILE).is_file()
    saved = torch.load(latest / OPTIMIZER_FILE)
    assert saved["state"] and all(
        entry["exp_avg"].dtype == torch.bfloat16 for entry in saved["state"].values()
    )

    events = []
    resumed = TrainConfig(
        speaker_name=SPEAKER,
        num_epochs=1,
        batch_size=2,
        lr=1e-3,
        output_dir=tmp_path / "again",
        resume_from=latest,
    )
    final = train(tiny_models.base, samples, config=resumed, settings=cpu_settings, on_step=events.append)
    assert [(e.epoch, e.global_step) for e in events] == [(1, 3), (1, 4)]
    assert TrainingState.read(final).global_step == 4
    assert not (final / OPTIMIZER_FILE).exists()


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(
    tiny_models, cpu_settings, base_tts, samples
):
    """The compact recipe recomputes decoder layers in backward on CUDA; the gradients must not change."""
    prepared = prepare_samples(base_tts, samples[:2])
    results = []
    for checkpointing in (False, True):
        model = load_model(tiny_models.base, cpu_settings).model
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        parameters = trainable_parameters(model, freeze_text_embedding=True)
        model.talker.train()
        loss = sft_loss(model, build_batch(prepared, model.config)).total
        loss.backward()
        results.append(
            (loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        )
        assert len(results[-1][1]) == len(parameters)
    (loss_plain, grads_plain), (loss_checkpointed, grads_checkpointed) = results
    torch.testing.assert_close(loss_checkpointed, loss_plain)
    for name, grad in grads_plain.items():
        torch.testing.assert_close(grads_checkpointed[name], grad, rtol=1e-5, atol=1e-7, msg=name)


class CudaLikeRecipe(Recipe):
    """The compact recipe as it runs on CUDA (bf16 weights + extension, checkpointing), here on the CPU."""

    def weights_dtype(self, device_type: str) -> torch.dtype:
        return torch.bfloat16

    def checkpointing(self, device_type: str) -> bool:
        return True


def test_the_cuda_configuration_trains_and_exports_on_the_tiny_model(
    tiny_models, samples, cpu_settings, tmp_path, monkeypatch
):
    compact = RECIPES["compact"]
    cuda_like = CudaLikeRecipe(
        "cuda-like",
        compact.freeze_text_embedding,
        compact.bf16_weights_on_cuda,
        compact.state_dtype,
        compact.gradient_checkpointing,
    )
    monkeypatch.setitem(RECIPES, "cuda-like", cuda_like)
    events = []
    config = TrainConfig(
        speaker_name=SPEAKER,
        num_epochs=3,
        batch_size=2,
        lr=1e-3,
        output_dir=tmp_path / "out",
        recipe="cuda-like",
    )
    final = train(tiny_models.base, samples, config=config, settings=cpu_settings, on_step=events.append)
    assert events[-1].loss < events[0].loss, [e.loss for e in events]
    served = load_model(final, cpu_settings)
    assert served.get_supported_speakers() == [SPEAKER.lower()]
    wavs, _ = served.generate_custom_voice("Hello there.", speaker=SPEAKER, max_new_tokens=4)
    assert len(wavs) == 1
