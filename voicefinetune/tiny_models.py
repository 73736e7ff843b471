"""Tiny random Qwen3-TTS checkpoints, built in seconds on CPU with the real `qwen_tts` classes.

`build_tiny_models(dir)` writes three folders that `qwen_tts.Qwen3TTSModel.from_pretrained` loads:

- ``base/``: ``tts_model_type="base"`` (voice clone; has the speaker encoder, fine-tune this one),
- ``voice_design/``: ``tts_model_type="voice_design"`` (voice from an instruct text),
- ``custom_voice/``: ``tts_model_type="custom_voice"``, shaped like a fine-tuned checkpoint: one speaker,
  ``TINY_SPEAKER = "tiny_speaker"``, whose embedding (the base model's speaker encoder applied to a synthetic
  24 kHz clip) sits in codec-embedding row ``TINY_SPEAKER_SLOT``; no ``speaker_encoder.*`` weights.

Each folder holds ``config.json``, ``model.safetensors``, ``generation_config.json`` (sampling defaults and a small
``max_new_tokens`` so a sentence gives ~0.5-3 s of audio quickly), the text tokenizer (a byte-level BPE trained
here, saved through ``Qwen3TTSProcessor``) and ``speech_tokenizer/`` (a tiny 12 Hz ``Qwen3TTSTokenizer``: 24 kHz,
1920 samples per frame, 16 codebooks of ``CODEBOOK_SIZE`` codes).

The weights are random but shaped so that tests can hear conditioning: the talker is initialised with a large
std (text, instruct, language and speaker change the sampled codes) and the speech tokenizer's codebooks are
seeded from frames of deterministic harmonic/noise signals (``encode`` gives varied codes, ``decode`` gives
non-silent audio). Same seed, same bytes. Every language of ``schemas.SUPPORTED_LANGUAGES`` is accepted.

Codec id layout of the talker (vocab ``CODEC_VOCAB_SIZE``): codes ``0..CODEBOOK_SIZE-1``; control ids, language
ids and speaker slots above them (the package suppresses the top 1024 ids, except EOS, while sampling).
``SPEAKER_SLOTS`` lists free rows a fine-tune may use for a new speaker.

`ensure_tiny_models(dir)` builds once and is safe when several processes call it together.
`vft models tiny DIR [--seed N] [--force]` prints the paths as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import fcntl
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .schemas import SAMPLE_RATE, SUPPORTED_LANGUAGES

TINY_SPEAKER = "tiny_speaker"
FORMAT_VERSION = 1
MARKER_FILE = "tiny-models.json"
KINDS = ("base", "voice_design", "custom_voice")

# --- sizes -----------------------------------------------------------------------------------------------------
HIDDEN = 32
HEADS = 2
KV_HEADS = 1
HEAD_DIM = 16
NUM_CODE_GROUPS = 16
CODEBOOK_SIZE = 64
CODEC_VOCAB_SIZE = CODEBOOK_SIZE + 1024
SAMPLES_PER_FRAME = 1920
TALKER_INIT_STD = 0.3  # 0.02 (the package default) makes sampled output ignore text, speaker and instruct

# --- codec ids (all >= CODEBOOK_SIZE, inside the suppressed top 1024) -------------------------------------------
CODEC_PAD_ID = CODEBOOK_SIZE + 36
CODEC_BOS_ID = CODEBOOK_SIZE + 37
CODEC_EOS_ID = CODEBOOK_SIZE + 38
CODEC_THINK_ID = CODEBOOK_SIZE + 42
CODEC_NOTHINK_ID = CODEBOOK_SIZE + 43
CODEC_THINK_BOS_ID = CODEBOOK_SIZE + 44
CODEC_THINK_EOS_ID = CODEBOOK_SIZE + 45
LANGUAGE_ID_START = CODEBOOK_SIZE + 2
SPEAKER_SLOTS = tuple(range(CODEBOOK_SIZE + 64, CODEBOOK_SIZE + 96))
TINY_SPEAKER_SLOT = SPEAKER_SLOTS[0]
MAX_NEW_TOKENS = 24  # codec frames: about 2 s at 12.5 Hz

# --- text tokenizer --------------------------------------------------------------------------------------------
TEXT_VOCAB_SIZE = 384
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|tts_pad|>", "<|tts_bos|>", "<|tts_eos|>")
# Qwen2's pre-tokenizer split; with it `<|im_start|>assistant\n` is three tokens, as qwen_tts' slicing expects.
PRETOKENIZE_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
CORPUS = (
    "Hello, this is a tiny voice. The quick brown fox jumps over the lazy dog.",
    "Speak slowly and clearly, with a warm and friendly tone.",
    "A deep calm male voice. A bright cheerful female voice. Whisper softly.",
    "Guten Tag, wie geht es dir? Bonjour, comment allez-vous? Hola, ¿qué tal?",
    "Buongiorno a tutti. Olá, tudo bem? Привет, как дела?",
    "你好，欢迎使用语音合成。こんにちは、元気ですか。안녕하세요, 반갑습니다.",
    "Numbers 0 1 2 3 4 5 6 7 8 9 and punctuation: ; ! ? ( ) - ' \".",
)
ROLE_LINES = ("<|im_start|>assistant\n", "<|im_start|>user\n", "<|im_end|>\n")


@dataclass(frozen=True)
class TinyModels:
    root: Path
    base: Path
    voice_design: Path
    custom_voice: Path

    @classmethod
    def at(cls, root: Path) -> TinyModels:
        root = Path(root)
        return cls(root=root, base=root / "base", voice_design=root / "voice_design", custom_voice=root / "custom_voice")

    def as_dict(self) -> dict[str, str]:
        return {"root": str(self.root), "base": str(self.base), "voice_design": str(self.voice_design),
                "custom_voice": str(self.custom_voice), "speaker": TINY_SPEAKER}


# --- deterministic signals ---------------------------------------------------------------------------------------
def synthetic_voice(seed: int, seconds: float = 1.2, f0: float | None = None) -> np.ndarray:
    """A speech-like 24 kHz clip: a vibrato harmonic series with formant-ish weights, syllable envelope and
    noise bursts. Deterministic in `seed`; peak 0.5."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    f0 = f0 or float(rng.uniform(90, 260))
    pitch = f0 * (1 + 0.06 * np.sin(2 * np.pi * rng.uniform(3, 6) * t) + 0.1 * rng.uniform(-1, 1) * t)
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    formants = rng.uniform(300, 3000, size=3)
    wave = np.zeros(n)
    for h in range(1, 16):
        weight = sum(np.exp(-(((h * f0) - f) / 250) ** 2) for f in formants) + 0.05 / h
        wave += weight * np.sin(h * phase + rng.uniform(0, 2 * np.pi))
    syllables = 0.5 * (1 - np.cos(2 * np.pi * rng.uniform(3, 5) * t))
    noise = rng.standard_normal(n) * (rng.uniform(size=n // 2400 + 1).repeat(2400)[:n] > 0.7)
    wave = wave * syllables + 0.3 * noise
    return (0.5 * wave / (np.abs(wave).max() + 1e-9)).astype(np.float32)


# --- configs -----------------------------------------------------------------------------------------------------
def speech_tokenizer_config() -> dict[str, Any]:
    encoder = {
        "model_type": "mimi", "sampling_rate": SAMPLE_RATE, "frame_rate": 12.5, "audio_channels": 1,
        "hidden_size": HIDDEN, "num_filters": 4, "num_residual_layers": 1, "upsampling_ratios": [8, 6, 5, 4],
        "kernel_size": 7, "last_kernel_size": 3, "residual_kernel_size": 3, "dilation_growth_rate": 2,
        "use_causal_conv": True, "pad_mode": "constant", "compress": 2, "trim_right_ratio": 1.0,
        "codebook_size": CODEBOOK_SIZE, "codebook_dim": 16, "vector_quantization_hidden_dimension": 16,
        "num_quantizers": NUM_CODE_GROUPS, "num_semantic_quantizers": 1, "upsample_groups": HIDDEN,
        "num_hidden_layers": 1, "intermediate_size": 64, "num_attention_heads": HEADS, "num_key_value_heads": HEADS,
        "head_dim": HEAD_DIM, "hidden_act": "gelu", "max_position_embeddings": 8000, "sliding_window": 250,
        "use_cache": False, "use_streaming": False,
    }
    decoder = {
        "codebook_size": CODEBOOK_SIZE, "codebook_dim": 16, "hidden_size": HIDDEN, "latent_dim": HIDDEN,
        "max_position_embeddings": 8000, "rope_theta": 10000, "num_attention_heads": HEADS,
        "num_key_value_heads": HEADS, "head_dim": HEAD_DIM, "attention_bias": False, "sliding_window": 72,
        "intermediate_size": 64, "hidden_act": "silu", "layer_scale_initial_scale": 0.01, "rms_norm_eps": 1e-5,
        "num_hidden_layers": 1, "num_quantizers": NUM_CODE_GROUPS, "upsample_rates": [8, 5, 4, 3],
        "upsampling_ratios": [2, 2], "decoder_dim": 32, "attention_dropout": 0.0,
    }
    return {
        "architectures": ["Qwen3TTSTokenizerV2Model"], "model_type": "qwen3_tts_tokenizer_12hz",
        "encoder_config": encoder, "decoder_config": decoder, "encoder_valid_num_quantizers": NUM_CODE_GROUPS,
        "input_sample_rate": SAMPLE_RATE, "output_sample_rate": SAMPLE_RATE,
        "decode_upsample_rate": SAMPLES_PER_FRAME, "encode_downsample_rate": SAMPLES_PER_FRAME,
        "transformers_version": "4.57.3",
    }


FEATURE_EXTRACTOR_CONFIG = {
    "feature_extractor_type": "EncodecFeatureExtractor", "feature_size": 1, "padding_side": "right",
    "padding_value": 0.0, "return_attention_mask": True, "sampling_rate": SAMPLE_RATE,
    "chunk_length_s": None, "overlap": None,
}


def language_ids() -> dict[str, int]:
    names = [lang.lower() for lang in SUPPORTED_LANGUAGES if lang.lower() != "auto"]
    return {name: LANGUAGE_ID_START + i for i, name in enumerate(names)}


def tts_config(kind: str, text_ids: dict[str, int], text_vocab_size: int) -> dict[str, Any]:
    """config.json of one tiny checkpoint (`kind` = its tts_model_type)."""
    speakers = {TINY_SPEAKER: TINY_SPEAKER_SLOT} if kind == "custom_voice" else {}
    talker = {
        "vocab_size": CODEC_VOCAB_SIZE, "hidden_size": HIDDEN, "intermediate_size": 64, "num_hidden_layers": 1,
        "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM, "hidden_act": "silu",
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "rope_theta": 10000, "attention_bias": False,
        "rope_scaling": {"rope_type": "default", "mrope_section": [4, 2, 2], "interleaved": True},
        "num_code_groups": NUM_CODE_GROUPS, "text_hidden_size": HIDDEN, "text_vocab_size": text_vocab_size,
        "codec_eos_token_id": CODEC_EOS_ID, "codec_think_id": CODEC_THINK_ID, "codec_nothink_id": CODEC_NOTHINK_ID,
        "codec_think_bos_id": CODEC_THINK_BOS_ID, "codec_think_eos_id": CODEC_THINK_EOS_ID,
        "codec_pad_id": CODEC_PAD_ID, "codec_bos_id": CODEC_BOS_ID, "codec_language_id": language_ids(),
        "pad_token_id": CODEC_PAD_ID,  # silences transformers' "Setting pad_token_id" warning on every call
        "spk_id": speakers, "spk_is_dialect": {name: False for name in speakers},
        "code_predictor_config": {
            "vocab_size": CODEBOOK_SIZE, "hidden_size": HIDDEN, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM,
            "max_position_embeddings": 64, "rms_norm_eps": 1e-6, "rope_theta": 10000,
            "num_code_groups": NUM_CODE_GROUPS,
        },
    }
    speaker_encoder = {
        "mel_dim": 128, "enc_dim": HIDDEN, "enc_channels": [16, 16, 16, 16, 48], "enc_kernel_sizes": [5, 3, 3, 3, 1],
        "enc_dilations": [1, 2, 3, 4, 1], "enc_attention_channels": 8, "enc_res2net_scale": 4,
        "enc_se_channels": 8, "sample_rate": SAMPLE_RATE,
    }
    return {
        "architectures": ["Qwen3TTSForConditionalGeneration"], "model_type": "qwen3_tts",
        "tokenizer_type": "qwen3_tts_tokenizer_12hz", "tts_model_size": "1b7", "tts_model_type": kind,
        "im_start_token_id": text_ids["<|im_start|>"], "im_end_token_id": text_ids["<|im_end|>"],
        "tts_pad_token_id": text_ids["<|tts_pad|>"], "tts_bos_token_id": text_ids["<|tts_bos|>"],
        "tts_eos_token_id": text_ids["<|tts_eos|>"], "talker_config": talker,
        "speaker_encoder_config": speaker_encoder, "dtype": "float32", "transformers_version": "4.57.3",
    }


GENERATION_CONFIG = {
    "do_sample": True, "top_k": 50, "top_p": 1.0, "temperature": 0.9, "repetition_penalty": 1.05,
    "subtalker_dosample": True, "subtalker_top_k": 50, "subtalker_top_p": 1.0, "subtalker_temperature": 0.9,
    "max_new_tokens": MAX_NEW_TOKENS,
}


# --- builders ----------------------------------------------------------------------------------------------------
def train_text_tokenizer() -> Any:
    """A byte-level BPE with Qwen's special tokens, wrapped as `Qwen2TokenizerFast`."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    bpe = Tokenizer(models.BPE())
    # A Sequence, because transformers 4.57.3 replaces pre_tokenizer[0] when loading (its Mistral regex fix).
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TEXT_VOCAB_SIZE, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    # Role words repeated so that "assistant" and "user" become single tokens.
    bpe.train_from_iterator(list(CORPUS) + [line for line in ROLE_LINES for _ in range(50)], trainer)
    return Qwen2TokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None, bos_token=None,
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t not in ("<|endoftext|>", "<|im_end|>")],
        errors="replace", add_prefix_space=False, clean_up_tokenization_spaces=False, model_max_length=32768,
    )


def _normal_(tensor: Any, std: float, generator: Any) -> None:
    import torch

    with torch.no_grad():
        tensor.copy_(torch.randn(tensor.shape, generator=generator) * std)


def _fan_in_init(module: Any, generator: Any, gain: float = 1.0) -> None:
    """Re-initialise every conv/linear weight with std gain/sqrt(fan_in) (signal neither vanishes nor explodes)."""
    import torch
    from torch import nn

    for layer in module.modules():
        if isinstance(layer, (nn.Conv1d, nn.ConvTranspose1d, nn.Linear)):
            weight = layer.weight
            fan_in = weight.shape[1] * (weight[0, 0].numel() if weight.dim() > 2 else 1)
            if isinstance(layer, nn.ConvTranspose1d):  # weight is (in, out/groups, k)
                fan_in = weight.shape[0] * weight.shape[2] // layer.stride[0]
            _normal_(weight, gain / np.sqrt(fan_in), generator)
            if layer.bias is not None:
                with torch.no_grad():
                    layer.bias.zero_()


def build_speech_tokenizer(seed: int) -> Any:
    """The tiny 12 Hz speech tokenizer model with audible, code-diverse random weights."""
    import torch
    from qwen_tts.core import Qwen3TTSTokenizerV2Config, Qwen3TTSTokenizerV2Model

    generator = torch.Generator().manual_seed(seed)
    model = Qwen3TTSTokenizerV2Model(Qwen3TTSTokenizerV2Config(**speech_tokenizer_config())).eval()
    _fan_in_init(model.encoder.encoder, generator)
    _fan_in_init(model.decoder, generator)
    _seed_encoder_codebooks(model.encoder, seed, generator)
    for codebook in _decoder_codebooks(model.decoder):
        _normal_(codebook.embedding_sum, 1.0, generator)
    _calibrate_decoder_level(model.decoder, generator)
    return model


def _calibrate_decoder_level(decoder: Any, generator: Any, target_rms: float = 0.15) -> None:
    """Scale the last conv so decoded audio has about `target_rms` instead of clipping at +-1."""
    import torch

    last_conv = decoder.decoder[-1].conv
    codes = torch.randint(0, CODEBOOK_SIZE, (4, NUM_CODE_GROUPS, 12), generator=generator)
    with torch.no_grad():
        last_conv.weight.mul_(1e-4)  # the output is linear in this weight (no bias) and now far from the clamp
        rms = decoder(codes).pow(2).mean().sqrt()
        last_conv.weight.mul_(target_rms / (rms + 1e-12))


def _decoder_codebooks(decoder: Any) -> Iterator[Any]:
    for rvq in (decoder.quantizer.rvq_first, decoder.quantizer.rvq_rest):
        for layer in rvq.vq.layers:
            yield layer._codebook



def _seed_encoder_codebooks(encoder: Any, seed: int, generator: Any) -> None:
    """Set each RVQ codebook to latent frames (residuals, after the first) of synthetic clips, so that nearest-
    centroid search spreads over the codes instead of mapping everything to code 0."""
    import torch

    clips = np.stack([synthetic_voice(seed * 1000 + i) for i in range(8)])
    with torch.no_grad():
        latents = encoder.encoder(torch.from_numpy(clips).unsqueeze(1))
        latents = encoder.encoder_transformer(latents.transpose(1, 2))[0].transpose(1, 2)
        latents = encoder.downsample(latents)
        quantizer = encoder.quantizer
        for rvq in (quantizer.semantic_residual_vector_quantizer, quantizer.acoustic_residual_vector_quantizer):
            projected = rvq.input_proj(latents) if rvq.input_proj is not None else latents
            residual = projected.transpose(1, 2).reshape(-1, projected.shape[1])
            for layer in rvq.layers:
                codebook = layer.codebook
                picks = torch.randint(0, residual.shape[0], (codebook.codebook_size,), generator=generator)
                jitter = torch.randn(codebook.codebook_size, residual.shape[1], generator=generator)
                centroids = residual[picks] + 0.05 * residual.std() * jitter
                codebook.embed_sum.copy_(centroids)
                codebook.cluster_usage.fill_(1.0)
                codebook._embed = None
                residual = residual - centroids[codebook.quantize(residual)]


def build_tts_model(config: dict[str, Any], seed: int) -> Any:
    """A `Qwen3TTSForConditionalGeneration` from `config` with the talker at TALKER_INIT_STD."""
    import torch
    from qwen_tts.core.models import Qwen3TTSConfig, Qwen3TTSForConditionalGeneration
    from torch import nn

    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Qwen3TTSForConditionalGeneration(Qwen3TTSConfig(**copy.deepcopy(config))).eval()
    for layer in model.talker.modules():
        if isinstance(layer, (nn.Linear, nn.Embedding)):
            _normal_(layer.weight, TALKER_INIT_STD, generator)
            if getattr(layer, "bias", None) is not None:
                with torch.no_grad():
                    layer.bias.zero_()
    if model.speaker_encoder is not None:
        _fan_in_init(model.speaker_encoder, generator)
        _calibrate_speaker_encoder(model, seed)
    return model


def _calibrate_speaker_encoder(model: Any, seed: int) -> None:
    """Centre and scale the speaker encoder's output over a set of synthetic voices: random ReLU features share a
    large common component, which would make every voice sound alike to the talker."""
    import torch

    with torch.no_grad():
        embeddings = torch.stack([
            model.extract_speaker_embedding(synthetic_voice(seed * 1000 + 500 + i), SAMPLE_RATE) for i in range(6)
        ])
        fc = model.speaker_encoder.fc
        scale = TALKER_INIT_STD / (embeddings.std(dim=0).mean() + 1e-6)
        fc.weight.mul_(scale)
        fc.bias.copy_((fc.bias - embeddings.mean(dim=0)) * scale)


def speaker_embedding(model: Any, seed: int) -> Any:
    return model.extract_speaker_embedding(synthetic_voice(seed, seconds=2.0), SAMPLE_RATE)


def write_weights(model: Any, folder: Path, skip_prefix: str | None = None) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()
             if not (skip_prefix and k.startswith(skip_prefix))}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def build_tiny_models(directory: str | Path, seed: int = 0) -> TinyModels:
    """Write base/, voice_design/ and custom_voice/ tiny checkpoints under `directory` (see the module docstring)."""
    import torch

    from .qwen import import_qwen_tts

    import_qwen_tts()
    models = TinyModels.at(Path(directory))
    models.root.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add synchronisation (see qwen.limit_cpu_threads...)
    try:
        _build_into(models, seed)
    finally:
        torch.set_num_threads(threads)
    write_json(models.root / MARKER_FILE, {"format_version": FORMAT_VERSION, "seed": seed, **models.as_dict()})
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
            custom_voice.talker.get_input_embeddings().weight[TINY_SPEAKER_SLOT] = speaker_embedding(base, seed + 7)

        for kind, model in (("base", base), ("voice_design", voice_design), ("custom_voice", custom_voice)):
            folder = getattr(models, kind)
            _write_checkpoint(folder, configs[kind], model, text_tokenizer, speech_tokenizer, Qwen3TTSProcessor)


def _write_checkpoint(folder: Path, config: dict[str, Any], model: Any, text_tokenizer: Any,
                      speech_tokenizer: Any, processor_class: Any) -> None:
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


def is_complete(directory: str | Path, seed: int | None = None) -> bool:
    """True when `directory` holds a finished build of this format (and of `seed`, when given); the marker file is
    written last, after every folder is in place."""
    marker = Path(directory) / MARKER_FILE
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    models = TinyModels.at(Path(directory))
    folders = (models.base, models.voice_design, models.custom_voice)
    if info.get("format_version") != FORMAT_VERSION or (seed is not None and info.get("seed") != seed):
        return False
    return all((f / "model.safetensors").is_file() for f in folders)


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_tiny_models(directory: str | Path, seed: int = 0) -> TinyModels:
    """The tiny models under `directory`, built on first use. Several processes may call this at once: one builds
    (under a lock file) into a staging folder and moves the finished folders into place; the others wait."""
    root = Path(directory)
    if is_complete(root, seed):
        return TinyModels.at(root)
    root.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(root / ".lock"):
        if is_complete(root, seed):
            return TinyModels.at(root)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
        try:
            build_tiny_models(staging, seed=seed)
            (root / MARKER_FILE).unlink(missing_ok=True)
            for kind in KINDS:
                target = root / kind
                if target.exists():
                    shutil.rmtree(target)
                os.replace(staging / kind, target)
            models = TinyModels.at(root)
            marker = json.loads((staging / MARKER_FILE).read_text(encoding="utf-8"))
            tmp_marker = staging / (MARKER_FILE + ".tmp")
            write_json(tmp_marker, {**marker, **models.as_dict()})
            os.replace(tmp_marker, root / MARKER_FILE)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return models


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vft models", description="Tiny random Qwen3-TTS checkpoints for tests.")
    sub = parser.add_subparsers(dest="command", required=True)
    tiny = sub.add_parser("tiny", help="build base/, voice_design/ and custom_voice/ under DIR; print paths as JSON")
    tiny.add_argument("directory", metavar="DIR", type=Path)
    tiny.add_argument("--seed", type=int, default=0, help="random seed (same seed, same weights)")
    tiny.add_argument("--force", action="store_true", help="rebuild even when DIR already holds tiny models")
    args = parser.parse_args(argv)

    started = time.monotonic()
    if args.force:
        (args.directory / MARKER_FILE).unlink(missing_ok=True)
    models = ensure_tiny_models(args.directory, seed=args.seed)
    print(json.dumps({**models.as_dict(), "seconds": round(time.monotonic() - started, 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
