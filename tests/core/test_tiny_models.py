"""Tiny random Qwen3-TTS checkpoints: built fast, loaded by the real package, conditioning audible."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from voicefinetune.devtools.signals import synthetic_voice
from voicefinetune.devtools.tiny_configs import TINY_SPEAKER
from voicefinetune.devtools.tiny_models import MARKER_FILE, build_tiny_models, ensure_tiny_models, is_complete
from voicefinetune.qwen import import_qwen_tts, limit_cpu_threads_for_tiny_models
from voicefinetune.schemas import SAMPLE_RATE, SUPPORTED_LANGUAGES

TEXT = "Hello there, this is a tiny test."


@pytest.fixture(scope="module")
def loaded(tiny_models):
    """Each tiny checkpoint loaded with the package's own `Qwen3TTSModel.from_pretrained`."""
    qwen_tts = import_qwen_tts()
    limit_cpu_threads_for_tiny_models()  # what load_model does with VFT_TINY_MODELS on CPU
    return {
        kind: qwen_tts.Qwen3TTSModel.from_pretrained(str(getattr(tiny_models, kind)), dtype=torch.float32)
        for kind in ("base", "voice_design", "custom_voice")
    }


def generate(method, **kwargs) -> np.ndarray:
    """One sample, sampled with a fixed seed so that two calls differ only by their inputs."""
    torch.manual_seed(1234)
    wavs, sample_rate = method(**kwargs)
    assert sample_rate == SAMPLE_RATE
    assert len(wavs) == 1
    return wavs[0]


def assert_sane_audio(wav: np.ndarray) -> None:
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert 0.15 <= len(wav) / SAMPLE_RATE <= 3.0
    assert np.isfinite(wav).all() and np.abs(wav).max() <= 1.0
    assert np.sqrt(np.mean(wav**2)) > 0.01  # not silence


def differ(a: np.ndarray, b: np.ndarray) -> bool:
    return len(a) != len(b) or float(np.abs(a - b).mean()) > 1e-3


def test_build_writes_three_checkpoints(tmp_path):
    models = build_tiny_models(tmp_path / "tiny")
    for kind in ("base", "voice_design", "custom_voice"):
        folder = getattr(models, kind)
        config = json.loads((folder / "config.json").read_text())
        assert config["tts_model_type"] == kind
        for name in (
            "model.safetensors",
            "generation_config.json",
            "speech_tokenizer/model.safetensors",
            "speech_tokenizer/config.json",
            "speech_tokenizer/preprocessor_config.json",
        ):
            assert (folder / name).is_file(), f"{kind}/{name} missing"
        assert sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) < 5_000_000
    assert is_complete(models.root)


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    first = build_tiny_models(tmp_path / "a", seed=3)
    again = build_tiny_models(tmp_path / "b", seed=3)
    other = build_tiny_models(tmp_path / "c", seed=4)
    for kind in ("base", "voice_design", "custom_voice"):
        weights = [(getattr(m, kind) / "model.safetensors").read_bytes() for m in (first, again, other)]
        assert weights[0] == weights[1]
        assert weights[0] != weights[2]


def test_each_folder_loads_with_the_expected_type_languages_and_speakers(loaded):
    wanted_languages = {language.lower() for language in SUPPORTED_LANGUAGES}
    for kind, model in loaded.items():
        assert model.model.tts_model_type == kind
        assert wanted_languages <= set(model.get_supported_languages())
    assert loaded["custom_voice"].get_supported_speakers() == [TINY_SPEAKER]
    assert loaded["base"].model.speaker_encoder is not None
    assert loaded["custom_voice"].model.speaker_encoder is None


@pytest.mark.parametrize("language", SUPPORTED_LANGUAGES)
def test_every_supported_language_generates(loaded, language):
    wav = generate(
        loaded["custom_voice"].generate_custom_voice,
        text=TEXT,
        speaker=TINY_SPEAKER,
        language=language,
        max_new_tokens=4,
    )
    assert len(wav) > 0


def test_custom_voice_generates_sane_audio(loaded):
    wav = generate(
        loaded["custom_voice"].generate_custom_voice, text=TEXT, speaker=TINY_SPEAKER, language="English"
    )
    assert_sane_audio(wav)


def test_custom_voice_text_and_instruct_change_the_audio(loaded):
    model = loaded["custom_voice"]
    reference = generate(model.generate_custom_voice, text=TEXT, speaker=TINY_SPEAKER, language="English")
    same = generate(model.generate_custom_voice, text=TEXT, speaker=TINY_SPEAKER, language="English")
    other_text = generate(
        model.generate_custom_voice, text="Something else entirely.", speaker=TINY_SPEAKER, language="English"
    )
    instructed = generate(
        model.generate_custom_voice,
        text=TEXT,
        speaker=TINY_SPEAKER,
        language="English",
        instruct="Whisper, very slowly.",
    )
    assert not differ(reference, same)  # the seed alone fixes the output: what differs below is conditioning
    assert differ(reference, other_text)
    assert differ(reference, instructed)


def test_voice_design_instruct_and_text_change_the_audio(loaded):
    model = loaded["voice_design"]
    deep = generate(
        model.generate_voice_design, text=TEXT, instruct="A deep calm male voice.", language="English"
    )
    bright = generate(
        model.generate_voice_design, text=TEXT, instruct="A bright cheerful voice.", language="English"
    )
    other_text = generate(
        model.generate_voice_design, text="Goodbye.", instruct="A deep calm male voice.", language="English"
    )
    assert_sane_audio(deep)
    assert differ(deep, bright)
    assert differ(deep, other_text)


def test_voice_clone_with_ref_text_and_x_vector_only(loaded):
    model = loaded["base"]
    ref_one, ref_two = (synthetic_voice(11), SAMPLE_RATE), (synthetic_voice(22), SAMPLE_RATE)
    icl_one = generate(
        model.generate_voice_clone,
        text=TEXT,
        language="English",
        ref_audio=ref_one,
        ref_text="A reference sentence.",
    )
    icl_two = generate(
        model.generate_voice_clone,
        text=TEXT,
        language="English",
        ref_audio=ref_two,
        ref_text="A reference sentence.",
    )
    xvec_one = generate(
        model.generate_voice_clone, text=TEXT, language="English", ref_audio=ref_one, x_vector_only_mode=True
    )
    xvec_two = generate(
        model.generate_voice_clone, text=TEXT, language="English", ref_audio=ref_two, x_vector_only_mode=True
    )
    for wav in (icl_one, xvec_one):
        assert_sane_audio(wav)
    assert differ(icl_one, icl_two)
    assert differ(xvec_one, xvec_two)


def test_voice_clone_prompt_is_reusable_and_speaker_specific(loaded):
    model = loaded["base"]
    prompt = model.create_voice_clone_prompt(
        ref_audio=(synthetic_voice(11), SAMPLE_RATE), ref_text="Reference."
    )
    other = model.create_voice_clone_prompt(
        ref_audio=(synthetic_voice(22), SAMPLE_RATE), ref_text="Reference."
    )
    assert prompt[0].ref_code.shape[1] == 16
    assert not torch.allclose(prompt[0].ref_spk_embedding, other[0].ref_spk_embedding)
    first = generate(model.generate_voice_clone, text=TEXT, language="English", voice_clone_prompt=prompt)
    again = generate(model.generate_voice_clone, text=TEXT, language="English", voice_clone_prompt=prompt)
    assert_sane_audio(first)
    assert not differ(first, again)


def test_speech_tokenizer_codes_are_varied_and_decode_to_sound(loaded):
    tokenizer = loaded["base"].model.speech_tokenizer
    encoded = tokenizer.encode([synthetic_voice(5), synthetic_voice(6)], sr=SAMPLE_RATE)
    codes_a, codes_b = encoded.audio_codes
    assert codes_a.shape == (15, 16)  # 1.2 s at 12.5 frames/s, 16 codebooks
    assert codes_a.unique().numel() > 16
    assert codes_a[:, 0].unique().numel() > 3  # not one code over time
    assert not torch.equal(codes_a, codes_b)
    wavs, sample_rate = tokenizer.decode(encoded)
    assert sample_rate == SAMPLE_RATE
    assert len(wavs[0]) == 15 * 1920
    assert np.sqrt(np.mean(wavs[0] ** 2)) > 0.01


def test_ensure_tiny_models_builds_once_across_threads(tmp_path):
    root = tmp_path / "shared"
    results, errors = [], []

    def call() -> None:
        try:
            results.append(ensure_tiny_models(root))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len({r.base for r in results}) == 1
    assert is_complete(root)
    assert not list(root.glob(".staging-*"))
    built = (root / "base" / "model.safetensors").stat().st_mtime_ns
    ensure_tiny_models(root)
    assert (root / "base" / "model.safetensors").stat().st_mtime_ns == built


def test_ensure_rebuilds_an_interrupted_build(tmp_path):
    root = tmp_path / "partial"
    (root / "base").mkdir(parents=True)
    (root / "base" / "config.json").write_text("{")  # a crash mid-way left this, and no marker
    models = ensure_tiny_models(root)
    assert json.loads((models.base / "config.json").read_text())["tts_model_type"] == "base"


def test_vft_models_tiny_cli_in_two_processes_at_once(tmp_path):
    root = tmp_path / "cli"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "voicefinetune.cli", "models", "tiny", str(root), "--seed", "0"]
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in processes]
    for process, (stdout, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr
        lines = stdout.strip().splitlines()
        assert len(lines) == 1, stdout  # stdout is exactly one JSON document
        paths = json.loads(lines[0])
        assert paths["speaker"] == TINY_SPEAKER
        assert Path(paths["base"]) == root / "base"
        for kind in ("base", "voice_design", "custom_voice"):
            assert (Path(paths[kind]) / "config.json").is_file()
    assert (root / MARKER_FILE).is_file()


def test_ensure_rebuilds_when_asked_for_another_seed(tmp_path):
    root = tmp_path / "seeded"
    ensure_tiny_models(root, seed=0)
    seed_zero = (root / "base" / "model.safetensors").read_bytes()
    ensure_tiny_models(root, seed=1)
    assert (root / "base" / "model.safetensors").read_bytes() != seed_zero
    assert json.loads((root / MARKER_FILE).read_text())["seed"] == 1


def test_vft_builds_tiny_models_only_before_commands_that_load_models(tmp_path, monkeypatch):
    from voicefinetune import cli
    from voicefinetune.devtools import tiny_models as tiny_module

    built = []
    monkeypatch.setattr(tiny_module, "ensure_tiny_models", lambda root: built.append(Path(root)))
    monkeypatch.setenv("VFT_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("VFT_TINY_MODELS_DIR", raising=False)
    monkeypatch.setenv("VFT_TINY_MODELS", "1")
    for command, rest in (("train", ["--job-id", "j1"]), ("inference", []), ("serve", ["--port", "1"])):
        cli.ensure_tiny_models_for(command, rest)
    assert built == [tmp_path / "tiny-models"] * 3
    for command, rest in (
        ("serve", ["--backend", "kubernetes"]),
        ("operator", []),
        ("train", ["--help"]),
        ("models", ["tiny", str(tmp_path)]),
        ("demo", []),
    ):
        cli.ensure_tiny_models_for(command, rest)
    assert len(built) == 3
    monkeypatch.setenv("VFT_TINY_MODELS_DIR", str(tmp_path / "elsewhere"))
    cli.ensure_tiny_models_for("inference", [])
    assert built[-1] == tmp_path / "elsewhere"
    monkeypatch.setenv("VFT_TINY_MODELS", "0")
    cli.ensure_tiny_models_for("train", [])
    assert len(built) == 4
