"""A stand-in for `torchaudio` where no real one is installed, so that a plain `import qwen_tts` works.

qwen_tts 0.1.1 imports torchaudio at package import time, but only its unreleased 25 Hz tokenizer uses it; the
project installs qwen_tts without torchaudio (PyPI's build needs CUDA). `install_finder()` appends an import
finder that answers for `torchaudio` and the two submodules qwen_tts imports, only when no real torchaudio is found
first. `make setup` installs a `.pth` file that calls it at interpreter start-up, so test code and users can
`from qwen_tts import Qwen3TTSModel` directly; `voicefinetune.qwen.import_qwen_tts()` does the same for installs
without that file. Standard library only: this runs in every interpreter of the virtual environment.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types

TORCHAUDIO_MODULES = ("torchaudio", "torchaudio.compliance", "torchaudio.compliance.kaldi")


class TorchaudioUnavailable(AttributeError):
    """Raised when code touches the torchaudio placeholder (only the 25 Hz tokenizer would)."""


class TorchaudioPlaceholder(types.ModuleType):
    """An importable stand-in whose every public attribute raises a clear error."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise TorchaudioUnavailable(
            f"{self.__name__}.{name} is unavailable: torchaudio is not installed (or not usable) here and "
            "voicefinetune registered a placeholder. Only Qwen3-TTS's 25 Hz tokenizer needs it; the 12 Hz "
            "checkpoints this project uses do not."
        )


def _spec(name: str, loader: importlib.abc.Loader | None) -> importlib.machinery.ModuleSpec:
    # transformers' availability checks call importlib.util.find_spec, which needs a __spec__.
    return importlib.machinery.ModuleSpec(name, loader, is_package=True)


def placeholder_module(name: str) -> TorchaudioPlaceholder:
    module = TorchaudioPlaceholder(name)
    module.__spec__ = _spec(name, None)
    module.__path__ = []
    module.__file__ = None
    return module


def install_placeholder() -> None:
    """Register the placeholders in `sys.modules` now (replacing a torchaudio that failed to import)."""
    parent: types.ModuleType | None = None
    for name in TORCHAUDIO_MODULES:
        module = placeholder_module(name)
        sys.modules[name] = module
        if parent is not None:
            setattr(parent, name.rsplit(".", 1)[1], module)
        parent = module


class _PlaceholderFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Last on `sys.meta_path`: consulted only when no real torchaudio was found."""

    def find_spec(self, fullname, path=None, target=None):
        return _spec(fullname, self) if fullname in TORCHAUDIO_MODULES else None

    def create_module(self, spec):
        return placeholder_module(spec.name)

    def exec_module(self, module) -> None:
        return None


def install_finder() -> None:
    """Make `import torchaudio` give the placeholder when no real torchaudio is installed (idempotent)."""
    if not any(isinstance(finder, _PlaceholderFinder) for finder in sys.meta_path):
        sys.meta_path.append(_PlaceholderFinder())
