"""Tiny random Qwen3-TTS checkpoints, built in seconds on CPU with the real `qwen_tts` classes.

`build_tiny_models(dir)` writes three folders that `qwen_tts.Qwen3TTSModel.from_pretrained` loads:

- ``base/``: ``tts_model_type="base"`` (voice clone; has the speaker encoder, fine-tune this one),
- ``voice_design/``: ``tts_model_type="voice_design"`` (voice from an instruct text),
- ``custom_voice/``: ``tts_model_type="custom_voice"``, shaped like a fine-tuned checkpoint: one speaker,
  ``TINY_SPEAKER = "tiny_speaker"``, whose embedding (the base model's speaker encoder applied to a synthetic
  24 kHz clip) sits in codec-embedding row ``TINY_SPEAKER_SLOT``; no ``speaker_encoder.*`` weights.

Each folder holds ``config.json``, ``model.safetensors``, ``generation_config.json`` (sampling defaults and a small
``max_new_tokens`` so a sentence gives ~0.5-3 s of audio quickly), the text tokenizer (`tiny_text_tokenizer`, saved
through ``Qwen3TTSProcessor``) and ``speech_tokenizer/`` (`tiny_speech_tokenizer`). Same seed, same bytes.
`tiny_models.ensure_tiny_models` is the cached, concurrency-safe way to get them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..qwen import import_qwen_tts
from .tiny_configs import (
    FEATURE_EXTRACTOR_CONFIG,
    GENERATION_CONFIG,
    TINY_SPEAKER_SLOT,
    speech_tokenizer_config,
    tts_config,
)
from .tiny_layout import FORMAT_VERSION, KINDS, MARKER_FILE, TinyModels
from .tiny_speech_tokenizer import build_speech_tokenizer
from .tiny_text_tokenizer import SPECIAL_TOKENS, train_text_tokenizer
from .tiny_tts_model import build_tts_model, speaker_embedding


def write_weights(model: Any, folder: Path, skip_prefix: str | None = None) -> None:
    from safetensors.torch import save_file

    state = {
        k: v.detach().contiguous().clone()
        for k, v in model.state_dict().items()
        if not (skip_prefix and k.startswith(skip_prefix))
    }
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def build_tiny_models(directory: str | Path, seed: int = 0) -> TinyModels:
    """Write base/, voice_design/ and custom_voice/ tiny checkpoints under `directory` (see the module docstring)."""
    import torch

    import_qwen_tts()
    models = TinyModels.at(Path(directory))
    models.root.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add synchronisation (see qwen.limit_cpu_threads...)
    try:
        _build_into(models, seed)
    finally:
        torch.set_num_threads(threads)
    write_json(
        models.root / MARKER_FILE, {"format_version": FORMAT_VERSION, "seed": seed, **models.as_dict()}
    )
    return models


def _build_into(models: TinyModels, seed: int) -> None:
    import torch
    from qwen_tts.core.models import Qwen3TTSProcessor

    with torch.random.fork_rng(), torch.inference_mode(False):
        torch.manual_seed(seed)
        text_tokenizer = train_text_tokenizer()
        text_ids = {token: text_tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
        speech_tokenizer = build_speech_tokenizer(seed)

        configs = {kind: tts_config(kind, text_ids, len(text_tokenizer)) for kind in KINDS}
        base = build_tts_model(configs["base"], seed)
        voice_design = build_tts_model(configs["voice_design"], seed + 1)
        # custom_voice = the base talker with the tiny speaker's embedding in its slot, like a fine-tune.
        custom_voice = build_tts_model(configs["custom_voice"], seed)
        custom_voice.talker.load_state_dict(base.talker.state_dict())
        with torch.no_grad():
            custom_voice.talker.get_input_embeddings().weight[TINY_SPEAKER_SLOT] = speaker_embedding(
                base, seed + 7
            )

        for kind, model in (("base", base), ("voice_design", voice_design), ("custom_voice", custom_voice)):
            folder = getattr(models, kind)
            _write_checkpoint(
                folder, configs[kind], model, text_tokenizer, speech_tokenizer, Qwen3TTSProcessor
            )


def _write_checkpoint(
    folder: Path,
    config: dict[str, Any],
    model: Any,
    text_tokenizer: Any,
    speech_tokenizer: Any,
    processor_class: Any,
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    # Not model.save_pretrained: the config it writes does not reload (TypeError).
    write_json(folder / "config.json", config)
    write_json(folder / "generation_config.json", GENERATION_CONFIG)
    write_weights(model, folder)
    processor_class(tokenizer=text_tokenizer).save_pretrained(str(folder))
    speech = folder / "speech_tokenizer"
    speech.mkdir(exist_ok=True)
    write_json(speech / "config.json", speech_tokenizer_config())
    write_json(speech / "preprocessor_config.json", FEATURE_EXTRACTOR_CONFIG)
    write_weights(speech_tokenizer, speech)
