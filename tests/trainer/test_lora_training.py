"""`vft train --method lora` end to end as a child process: moto S3, the tiny Base model, PEFT adapters."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import librosa
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.trainer.test_train_cli import run_vft_train, train_args
from voicefinetune.devtools.sample_data import write_dataset_zip
from voicefinetune.qwen import load_model
from voicefinetune.schemas import LORA_TARGETS, SAMPLE_RATE
from voicefinetune.settings import Settings
from voicefinetune.storage import Storage

JOB_ID = "hero1-lora"
DATASET_KEY = "datasets/Hero1-lora/dataset.zip"
LORA_FILES = [
    "adapter_config.json",
    "adapter_model.safetensors",
    "config.json",
    "speaker_embedding.safetensors",
    "trainer_state.json",
]


@pytest.fixture(scope="module")
def lora_run(trainer_env, tmp_path_factory, clips, ref_clip):
    archive = write_dataset_zip(tmp_path_factory.mktemp("dataset") / "dataset.zip", clips, ref=ref_clip)
    Storage(Settings.from_env(trainer_env)).upload_file(archive, DATASET_KEY)
    run = run_vft_train(
        train_args(JOB_ID, DATASET_KEY, 2, "--method", "lora", "--lora-rank", "2"), trainer_env
    )
    assert run.returncode == 0, f"{run.last}\n{run.stderr[-4000:]}"
    return run


def published(trainer_env, prefix: str, into: Path) -> Path:
    return Storage(Settings.from_env(trainer_env)).download_dir(prefix, into)


def test_a_lora_job_publishes_adapter_embedding_and_a_config_naming_its_base(
    lora_run, trainer_env, tiny_models, tmp_path
):
    assert lora_run.last["stage"] == "done" and lora_run.last["s3_prefix"] == f"checkpoints/{JOB_ID}"
    folder = published(trainer_env, lora_run.last["s3_prefix"], tmp_path / "voice")
    assert sorted(p.name for p in folder.iterdir()) == LORA_FILES
    config = json.loads((folder / "config.json").read_text())
    assert config == {
        "tts_model_type": "lora_voice",
        "base_model": str(tiny_models.base),
        "speaker_name": "Hero1",
        "lora": {"rank": 2, "alpha": 4, "targets": list(LORA_TARGETS)},
    }
    weights = load_file(str(folder / "adapter_model.safetensors"))
    base = load_model(tiny_models.base, Settings.from_env(trainer_env)).model
    layers = len(base.talker.model.layers) + len(base.talker.code_predictor.model.layers)
    assert len(weights) == layers * len(LORA_TARGETS) * 2  # lora_A and lora_B of each targeted projection
    assert {tuple(t.shape)[0] for name, t in weights.items() if "lora_A" in name} == {2}
    assert any(float(t.abs().max()) > 0 for name, t in weights.items() if "lora_B" in name)  # it trained
    full_bytes = sum(p.stat().st_size for p in Path(tiny_models.custom_voice).rglob("*") if p.is_file())
    lora_bytes = sum(p.stat().st_size for p in folder.iterdir())
    assert lora_bytes < 0.15 * full_bytes, (lora_bytes, full_bytes)


def test_the_speaker_embedding_is_the_speaker_encoders_as_for_a_full_voice(
    lora_run, trainer_env, tiny_models, ref_clip, tmp_path
):
    folder = published(trainer_env, lora_run.last["s3_prefix"], tmp_path / "voice")
    stored = load_file(str(folder / "speaker_embedding.safetensors"))["speaker_embedding"]
    base = load_model(tiny_models.base, Settings.from_env(trainer_env)).model
    ref = librosa.resample(ref_clip.waveform, orig_sr=ref_clip.sample_rate, target_sr=SAMPLE_RATE)
    expected = base.extract_speaker_embedding(
        ref.astype(np.float32), SAMPLE_RATE
    )  # every clip shares this ref
    assert torch.allclose(stored, expected.float(), atol=1e-5)


def test_a_lora_job_resumes_from_its_published_adapter(lora_run, trainer_env):
    args = train_args("hero1-lora-resumed", DATASET_KEY, 1, "--method", "lora", "--lora-rank", "2")
    run = run_vft_train([*args, "--resume-from", f"checkpoints/{JOB_ID}"], trainer_env)
    assert run.returncode == 0, f"{run.last}\n{run.stderr[-4000:]}"
    assert not [e for e in run.events if "warning" in e]
    before, after = lora_run.progress(), run.progress()
    assert after[0]["epoch"] == before[-1]["epoch"] + 1
    assert after[0]["global_step"] == before[-1]["global_step"] + 1
    assert run.losses()[0][1] < lora_run.losses()[0][1]  # it starts from the trained adapter, not a fresh one


def test_a_lora_job_refuses_to_resume_from_a_full_checkpoint(trainer_env, dataset_zip, tiny_models, tmp_path):
    full = shutil.copytree(tiny_models.custom_voice, tmp_path / "full-voice")
    args = train_args("hero1-lora-from-full", dataset_zip, 1, "--method", "lora")
    run = run_vft_train([*args, "--resume-from", str(full)], trainer_env)
    assert run.returncode == 1
    assert run.last["stage"] == "failed"
    # a server path outside the data folder is told by its name (public_text)
    assert (
        run.last["error"]
        == "cannot resume from full-voice: full-voice is a full checkpoint: resume it with that method"
    )


def test_an_unknown_method_is_refused_naming_the_allowed_ones(trainer_env, dataset_zip):
    run = run_vft_train(train_args("hero1-dora", dataset_zip, 1, "--method", "dora"), trainer_env)
    assert run.returncode == 2
    assert run.events == [run.last] and run.last["stage"] == "failed"
    assert (
        run.last["error"]
        == "vft train: argument --method: invalid choice: 'dora' (choose from 'full', 'lora')"
    )
