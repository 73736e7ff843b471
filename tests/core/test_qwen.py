"""Importing and loading Qwen3-TTS: the torchaudio placeholder, model resolution, device/dtype/attention."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from voicefinetune.qwen import (
    TorchaudioUnavailable,
    choose_runtime,
    import_qwen_tts,
    load_model,
    loaded_runtime,
    resolve_model,
    tiny_models_root,
)
from voicefinetune.settings import SEED_BASE_MODEL, SEED_VOICE_DESIGN_MODEL, Settings

needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")


def test_import_qwen_tts_gives_the_package():
    qwen_tts = import_qwen_tts()
    assert qwen_tts.__name__ == "qwen_tts"
    assert hasattr(qwen_tts, "Qwen3TTSModel") and hasattr(qwen_tts, "Qwen3TTSTokenizer")
    assert import_qwen_tts() is qwen_tts


def test_the_25hz_tokenizer_module_imports_and_torchaudio_fails_clearly_only_when_used():
    import_qwen_tts()
    torchaudio = sys.modules["torchaudio"]
    if getattr(torchaudio, "__file__", None):
        pytest.skip("a real torchaudio is usable here")
    from qwen_tts.core.tokenizer_25hz.vq import speech_vq

    assert importlib.util.find_spec("torchaudio") is not None  # transformers' availability checks need a spec
    assert speech_vq.kaldi is sys.modules["torchaudio.compliance.kaldi"]
    with pytest.raises(TorchaudioUnavailable, match="25 Hz tokenizer"):
        speech_vq.kaldi.fbank(None)
    assert not hasattr(torchaudio, "load")  # introspection sees "absent", not a crash


def test_plain_import_qwen_tts_works_in_a_fresh_interpreter(tiny_models):
    """`make setup` installs a start-up hook (voicefinetune.torchaudio_fallback), so scripts that never call
    `import_qwen_tts()` can load checkpoints with the package's own API."""
    code = (
        "import sys, torch; from qwen_tts import Qwen3TTSModel\n"
        "model = Qwen3TTSModel.from_pretrained(sys.argv[1], dtype=torch.float32)\n"
        "print(model.model.tts_model_type, *model.get_supported_speakers())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tiny_models.custom_voice)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-2:] == ["custom_voice", "tiny_speaker"]


def test_resolve_model_without_tiny_models_gives_configured_ids(tmp_path):
    settings = Settings.from_env({"VFT_DATA_DIR": str(tmp_path)})
    assert resolve_model(settings, "base") == SEED_BASE_MODEL
    assert resolve_model(settings, "voice_design") == SEED_VOICE_DESIGN_MODEL
    custom = Settings.from_env({"VFT_BASE_MODEL": "/models/base", "VFT_VOICE_DESIGN_MODEL": "/models/vd"})
    assert resolve_model(custom, "base") == "/models/base"
    assert resolve_model(custom, "voice_design") == "/models/vd"


def test_resolve_model_with_tiny_models_uses_the_tiny_folders(tiny_models):
    settings = Settings.from_env({"VFT_TINY_MODELS": "1", "VFT_TINY_MODELS_DIR": str(tiny_models.root)})
    assert Path(resolve_model(settings, "base")) == tiny_models.base
    assert Path(resolve_model(settings, "voice_design")) == tiny_models.voice_design


def test_resolve_model_names_tiny_models_under_the_data_dir_by_default_and_never_builds_them(
    tmp_path, tiny_models
):
    settings = Settings.from_env({"VFT_TINY_MODELS": "1", "VFT_DATA_DIR": str(tmp_path)})
    assert tiny_models_root(settings) == tmp_path / "tiny-models"
    with pytest.raises(FileNotFoundError, match="vft models tiny"):
        resolve_model(settings, "base")
    assert not (tmp_path / "tiny-models").exists()
    shutil.copytree(tiny_models.root, tmp_path / "tiny-models")
    assert Path(resolve_model(settings, "base")) == tmp_path / "tiny-models" / "base"


def test_importing_the_core_loads_no_developer_tooling():
    code = "import sys, voicefinetune.qwen; print([m for m in sys.modules if m.startswith('voicefinetune.devtools')])"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def test_resolve_model_refuses_unknown_kinds(tmp_path):
    with pytest.raises(ValueError, match="voice_design"):
        resolve_model(Settings.from_env({"VFT_DATA_DIR": str(tmp_path)}), "custom")


@needs_no_cuda
@pytest.mark.parametrize("environ", [{}, {"DEVICE": "cuda:0", "USE_FLASH_ATTN": "1"}, {"DEVICE": "cpu"}])
def test_choose_runtime_falls_back_to_cpu_float32_sdpa(environ):
    runtime = choose_runtime(Settings.from_env(environ))
    assert (runtime.device, runtime.dtype, runtime.attn_implementation) == ("cpu", torch.float32, "sdpa")
    assert runtime.as_dict()["dtype"] == "float32"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_choose_runtime_uses_bf16_on_gpu():
    runtime = choose_runtime(Settings.from_env({"DEVICE": "cuda:0", "USE_FLASH_ATTN": "0"}))
    assert (runtime.device, runtime.dtype_name, runtime.attn_implementation) == ("cuda:0", "bfloat16", "sdpa")


@needs_no_cuda
def test_load_model_picks_cpu_float32_sdpa_here(tiny_models):
    settings = Settings.from_env(
        {"DEVICE": "cuda:0", "USE_FLASH_ATTN": "1"}
    )  # the original service's defaults
    model = load_model(tiny_models.custom_voice, settings)
    assert type(model).__name__ == "Qwen3TTSModel"
    runtime = loaded_runtime(model)
    assert (runtime.device, runtime.dtype_name, runtime.attn_implementation) == ("cpu", "float32", "sdpa")
    assert next(model.model.speech_tokenizer.model.parameters()).dtype == torch.float32
