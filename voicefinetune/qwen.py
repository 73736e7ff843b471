"""The one way the project imports and loads Qwen3-TTS (`qwen_tts`).

- `import_qwen_tts()` makes `import qwen_tts` work on machines without a usable torchaudio.
- `resolve_model(settings, kind)` names the checkpoint for "base" or "voice_design" (tiny ones in tests/demo:
  `tiny_models_root(settings)`/<kind>, a layout this module defines and `voicefinetune.devtools` builds; the `vft`
  command builds them before a command that loads models, the core never does).
- `load_model(path, settings)` loads a checkpoint on the chosen device/dtype/attention; `choose_runtime(settings)`
  says what that choice is (the trainer and /gpu/status report it).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import logging
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .settings import Settings
from .torchaudio_fallback import TorchaudioUnavailable as TorchaudioUnavailable  # re-exported
from .torchaudio_fallback import install_finder, install_placeholder

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

ModelKind = Literal["base", "voice_design"]
MODEL_KINDS: tuple[str, ...] = ("base", "voice_design")

# Tiny random checkpoints (VFT_TINY_MODELS=1): one folder per tts_model_type under the root below.
TINY_MODEL_KINDS: tuple[str, ...] = ("base", "voice_design", "custom_voice")
TINY_MODELS_SUBDIR = "tiny-models"  # under VFT_DATA_DIR when VFT_TINY_MODELS_DIR is unset


def tiny_models_root(settings: Settings) -> Path:
    """Where the tiny checkpoints live: VFT_TINY_MODELS_DIR, else VFT_DATA_DIR/tiny-models."""
    return settings.tiny_models_dir or settings.data_dir / TINY_MODELS_SUBDIR


def tiny_model_folder(root: str | Path, kind: str) -> Path:
    """The checkpoint folder of one tiny model ("base", "voice_design" or "custom_voice") under `root`."""
    if kind not in TINY_MODEL_KINDS:
        raise ValueError(f"unknown tiny model kind {kind!r}; expected one of {', '.join(TINY_MODEL_KINDS)}")
    return Path(root) / kind


def _torchaudio_usable() -> bool:
    if "torchaudio" in sys.modules:
        return True  # real or placeholder: already settled
    if importlib.util.find_spec("torchaudio") is None:
        return False
    try:
        importlib.import_module("torchaudio.compliance.kaldi")
    except Exception as exc:  # a CUDA-only build raises OSError (missing libc10_cuda.so)
        log.info("torchaudio is installed but not importable (%s); using a placeholder", exc)
        for name in [m for m in sys.modules if m == "torchaudio" or m.startswith("torchaudio.")]:
            del sys.modules[name]
        return False
    return True


def import_qwen_tts() -> types.ModuleType:
    """Return the `qwen_tts` module, first making torchaudio importable when the real one is not."""
    if "qwen_tts" in sys.modules:
        return sys.modules["qwen_tts"]
    install_finder()  # no-op where `make setup`'s .pth file already did it
    if not _torchaudio_usable():
        install_placeholder()
    # qwen_tts prints a flash-attn banner on stdout at import; stdout belongs to our JSON outputs.
    banner = io.StringIO()
    with contextlib.redirect_stdout(banner):
        module = importlib.import_module("qwen_tts")
    if banner.getvalue().strip():
        log.info("qwen_tts: %s", " ".join(banner.getvalue().replace("*", "").split()))
    return module


def resolve_model(settings: Settings, kind: str) -> str:
    """Local folder or hub id of the checkpoint for `kind` ("base" or "voice_design").

    With VFT_TINY_MODELS the tiny folder, which must already be built (`vft` does it before the commands that load
    models; `vft models tiny DIR` does it by hand): this only names it."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {', '.join(MODEL_KINDS)}")
    if settings.tiny_models:
        root = tiny_models_root(settings)
        folder = tiny_model_folder(root, kind)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"VFT_TINY_MODELS=1 but no tiny {kind} model in {folder}: build them with `vft models tiny {root}` "
                "(the `vft` command does it itself before the commands that load models)"
            )
        return str(folder)
    return settings.base_model if kind == "base" else settings.voice_design_model


@dataclass(frozen=True)
class Runtime:
    """Where and how a model runs: what `load_model` picks for the given settings on this machine."""

    device: str
    dtype_name: Literal["bfloat16", "float16", "float32"]
    attn_implementation: Literal["flash_attention_2", "sdpa"]
    note: str = ""

    @property
    def dtype(self) -> torch.dtype:
        import torch

        return getattr(torch, self.dtype_name)

    @property
    def on_gpu(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def flash_attention(self) -> bool:
        return self.attn_implementation == "flash_attention_2"

    def as_dict(self) -> dict[str, str]:
        return {
            "device": self.device,
            "dtype": self.dtype_name,
            "attn_implementation": self.attn_implementation,
            "note": self.note,
        }


def flash_attn_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def choose_runtime(settings: Settings) -> Runtime:
    """settings.device on CUDA (bf16) when CUDA is available, else CPU (float32); flash attention only when
    USE_FLASH_ATTN is on, CUDA is there and flash_attn is installed (load_model falls back to sdpa if it still
    fails to load), sdpa otherwise."""
    import torch

    wants_gpu = not settings.device.startswith("cpu")
    if not (wants_gpu and torch.cuda.is_available()):
        note = "CUDA not available; running on CPU" if wants_gpu else ""
        return Runtime(device="cpu", dtype_name="float32", attn_implementation="sdpa", note=note)
    if not settings.use_flash_attn:
        return Runtime(settings.device, "bfloat16", "sdpa")
    if not flash_attn_available():
        return Runtime(
            settings.device, "bfloat16", "sdpa", note="USE_FLASH_ATTN=1 but flash_attn is not installed"
        )
    return Runtime(settings.device, "bfloat16", "flash_attention_2")


def limit_cpu_threads_for_tiny_models() -> None:
    """One intra-op thread for this process. Tiny models run thousands of microscopic ops per sentence; with
    several threads each op pays a synchronisation, and on a busy shared CPU spinning threads made generation
    ~6x slower (measured). Only used with VFT_TINY_MODELS on CPU: real models want every core."""
    import torch

    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def load_model(path: str | Path, settings: Settings, runtime: Runtime | None = None) -> Any:
    """Load a checkpoint folder (or hub id) as `qwen_tts.Qwen3TTSModel` on the runtime `choose_runtime` picks
    (`loaded_runtime(model)` says what it ended up on)."""
    qwen_tts = import_qwen_tts()
    runtime = runtime or choose_runtime(settings)
    if settings.tiny_models and not runtime.on_gpu:
        limit_cpu_threads_for_tiny_models()
    kwargs = {"dtype": runtime.dtype, "device_map": runtime.device}
    try:
        return qwen_tts.Qwen3TTSModel.from_pretrained(
            str(path), attn_implementation=runtime.attn_implementation, **kwargs
        )
    except (ImportError, ValueError) as exc:
        if runtime.attn_implementation != "flash_attention_2":
            raise
        # flash_attn installed but unusable (wrong CUDA/torch build, GPU too old): degrade rather than fail.
        log.warning("flash_attention_2 failed to load (%s); falling back to sdpa", exc)
        return qwen_tts.Qwen3TTSModel.from_pretrained(str(path), attn_implementation="sdpa", **kwargs)


def loaded_runtime(model: Any) -> Runtime:
    """The device, dtype and attention a loaded `Qwen3TTSModel` really uses."""
    inner = model.model
    dtype_name = str(inner.dtype).removeprefix("torch.")
    return Runtime(
        device=str(inner.device),
        dtype_name=dtype_name,  # type: ignore[arg-type]
        attn_implementation=inner.talker.config._attn_implementation,
    )
