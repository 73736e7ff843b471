"""Qwen_tts, the upstream adapter: loading a checkpoint, upstream's generate calls, voice-clone prompts, GPU figures.

Every call here is blocking and runs in a worker thread; a model's lock serializes calls on it because the
upstream model is not safe for concurrent use. This module knows nothing of the engine: a model only records the
one it was loaded with (``VFT_ENGINE``), and `batch` and `stream` put that engine's decode loop around
`call_upstream`.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voicefinetune.settings import Settings
from voicefinetune_inference.engine.clone_prompts import ClonePrompts
from voicefinetune_inference.engine.lora import AdapterUse, adapters_for

GIB = 1024**3
# transformers' from_pretrained is not thread-safe (it switches global init state, e.g. meta-device
# initialisation): two loads in parallel threads can leave one model with meta tensors. Loads take turns.
_LOAD_LOCK = threading.Lock()


@dataclass
class LoadedModel:
    tts: Any  # qwen_tts.Qwen3TTSModel
    kind: str  # config.tts_model_type: "custom_voice" | "voice_design" | "base"
    path: str
    size_bytes: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    engine: str = "fast"  # Settings.engine: the decode loop `batch` and `stream` use
    decode_loop: Any = None  # the model's continuous loop (`scheduler.DecodeLoop`), when it has one
    clone_prompts: ClonePrompts = field(default_factory=ClonePrompts)  # (Base model) by reference

    def speakers(self) -> list[str]:
        return self.tts.get_supported_speakers() or []

    def engine_status(self) -> dict[str, Any] | None:
        """The continuous loop's slots, rows running, queue and graphs (None without one)."""
        return None if self.decode_loop is None else self.decode_loop.status()


@dataclass(frozen=True)
class SpeechItem:
    """One utterance to generate; ``speaker`` for custom voices, ``clone_prompt`` for the Base model, plus
    ``adapter`` (`lora.AdapterUse`) for a LoRA voice on it. ``seed``: the seed of its draws: in the continuous loop
    (`batch.generate`; None: a random one) and in a stream with any engine (`stream`; None: `utterance_seed`)."""

    text: str
    language: str
    instruct: str = ""
    speaker: str | None = None
    clone_prompt: Any = None
    adapter: AdapterUse | None = None
    seed: int | None = None


def load(path: str, settings: Settings) -> LoadedModel:
    from voicefinetune.qwen import load_model
    from voicefinetune_inference.engine import codec_mask

    with _LOAD_LOCK:
        tts = load_model(path, settings)
    codec_mask.install(tts.model.speech_tokenizer.model.decoder)
    size = sum(p.numel() * p.element_size() for p in tts.model.parameters())
    return LoadedModel(
        tts=tts,
        kind=str(tts.model.tts_model_type),
        path=str(path),
        size_bytes=int(size),
        engine=settings.engine,
    )


def call_upstream(
    loaded: LoadedModel, items: list[SpeechItem], **kwargs: Any
) -> tuple[list[np.ndarray], int]:
    """Upstream's ``generate_*`` for ``items`` (one kind of model); ``kwargs`` go to it (e.g. sampling settings).
    The caller holds ``loaded.lock`` and has put the engine's decode loop in place. Rows with a LoRA voice get
    their adapter for this call (`lora.adapters_for`)."""
    uses = [item.adapter for item in items]
    loop = getattr(loaded, "decode_loop", None)
    if any(uses) and loop is not None and not getattr(loop, "takes_adapters", False):
        raise ValueError("this model's decode loop cannot run LoRA voices")  # its thread runs the forwards
    with adapters_for(loaded.tts.model.talker, uses):
        return _call_upstream(loaded, items, **kwargs)


def _call_upstream(
    loaded: LoadedModel, items: list[SpeechItem], **kwargs: Any
) -> tuple[list[np.ndarray], int]:
    texts = [item.text for item in items]
    languages = [item.language for item in items]
    if loaded.kind == "custom_voice":
        return loaded.tts.generate_custom_voice(
            text=texts,
            speaker=[item.speaker for item in items],
            language=languages,
            instruct=[item.instruct or "" for item in items],
            **kwargs,
        )
    if loaded.kind == "voice_design":
        return loaded.tts.generate_voice_design(
            text=texts, instruct=[item.instruct or "" for item in items], language=languages, **kwargs
        )
    if loaded.kind == "base":
        return loaded.tts.generate_voice_clone(
            text=texts, language=languages, voice_clone_prompt=[item.clone_prompt for item in items], **kwargs
        )
    raise ValueError(f"checkpoint {loaded.path} has unknown tts_model_type {loaded.kind!r}")


def release(loaded: LoadedModel) -> None:
    """Drop the model's weights; on a GPU also collect cycles now and give cached memory back to the driver.

    On CPU the interpreter's own collector frees what reference counting leaves (a forced full collection over
    torch and transformers objects costs about a second on a busy machine).
    """
    if loaded.decode_loop is not None:
        loaded.decode_loop.close()
        loaded.decode_loop = None
    loaded.clone_prompts.clear()
    loaded.tts = None
    import torch

    from voicefinetune_inference.engine import codec_mask

    codec_mask.forget()

    if torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()


def clone_prompt(
    loaded: LoadedModel, waveform: np.ndarray, *, sample_rate: int, ref_text: str, use_xvec: bool
) -> Any:
    """The reusable voice-clone prompt of one reference recording (Base model)."""
    with loaded.lock:
        return loaded.tts.create_voice_clone_prompt(
            ref_audio=(waveform, sample_rate),
            ref_text=None if use_xvec else ref_text,
            x_vector_only_mode=use_xvec,
        )[0]


def gpu_memory(settings: Settings) -> dict[str, Any]:
    """GPU name and memory figures in GB from torch.cuda; all None when no CUDA device is used."""
    figures: dict[str, Any] = dict.fromkeys(
        (
            "gpu_name",
            "gpu_memory_total_gb",
            "gpu_memory_allocated_gb",
            "gpu_memory_reserved_gb",
            "gpu_memory_free_gb",
        )
    )
    import torch

    if not settings.device.startswith("cuda") or not torch.cuda.is_available():
        return figures
    device = torch.device(settings.device)
    free, total = torch.cuda.mem_get_info(device)
    figures.update(
        gpu_name=torch.cuda.get_device_name(device),
        gpu_memory_total_gb=round(total / GIB, 3),
        gpu_memory_allocated_gb=round(torch.cuda.memory_allocated(device) / GIB, 3),
        gpu_memory_reserved_gb=round(torch.cuda.memory_reserved(device) / GIB, 3),
        gpu_memory_free_gb=round(free / GIB, 3),
    )
    return figures


def vram_used_bytes(settings: Settings) -> float:
    import torch

    if settings.device.startswith("cuda") and torch.cuda.is_available():
        return float(torch.cuda.memory_allocated(torch.device(settings.device)))
    return 0.0


class _ThreadDecodes:
    """Installed as a tokenizer's ``decode`` while any replacement is active: each thread sees its own innermost
    replacement (several requests of one model decode at once in the continuous loop's callers); a replacement that
    calls ``tokenizer.decode`` itself reaches the one outside it; threads without one get what was there before."""

    def __init__(self, tokenizer: Any):
        own = vars(tokenizer)
        self.had, self.previous = "decode" in own, own.get("decode")
        self.fallback = self.previous if self.had else type(tokenizer).decode.__get__(tokenizer)
        self.stacks: dict[int, list[Callable[..., Any]]] = {}
        self.depths: dict[int, int] = {}

    def __call__(self, encoded: list[dict[str, Any]]) -> tuple[list[Any], int]:
        thread = threading.get_ident()
        stack = self.stacks.get(thread, [])
        depth = self.depths.get(thread, len(stack))
        if depth == 0:
            return self.fallback(encoded)
        self.depths[thread] = depth - 1
        try:
            return stack[depth - 1](encoded)
        finally:
            self.depths[thread] = depth


_DECODES_LOCK = threading.Lock()


@contextlib.contextmanager
def decode_replaced(
    tokenizer: Any, decode: Callable[[list[dict[str, Any]]], tuple[list[Any], int]]
) -> Iterator[None]:
    """Upstream's speech tokenizer decodes with ``decode`` within this block, in this thread (upstream calls
    ``tokenizer.decode`` after generating; an instance attribute covers the class's method), and as before after
    it."""
    with _DECODES_LOCK:
        decodes = vars(tokenizer).get("decode")
        if not isinstance(decodes, _ThreadDecodes):
            decodes = _ThreadDecodes(tokenizer)
            tokenizer.decode = decodes
        thread = threading.get_ident()
        decodes.stacks.setdefault(thread, []).append(decode)
    try:
        yield
    finally:
        with _DECODES_LOCK:
            stack = decodes.stacks[thread]
            stack.pop()
            if not stack:
                del decodes.stacks[thread]
            decodes.depths.pop(thread, None)
            if not decodes.stacks:
                if decodes.had:
                    tokenizer.decode = decodes.previous
                else:
                    del tokenizer.decode
