"""The shapes of the tiny checkpoints: sizes, the talker's codec id layout and the `config.json` documents.

Codec id layout of the talker (vocab ``CODEC_VOCAB_SIZE``): codes ``0..CODEBOOK_SIZE-1``; control ids, language
ids and speaker slots above them (the package suppresses the top 1024 ids, except EOS, while sampling).
``SPEAKER_SLOTS`` lists free rows a fine-tune may use for a new speaker; the custom_voice checkpoint holds one
speaker, ``TINY_SPEAKER``, in row ``TINY_SPEAKER_SLOT``. Every language of ``schemas.SUPPORTED_LANGUAGES`` is
accepted.
"""

from __future__ import annotations

from typing import Any

from ..schemas import SAMPLE_RATE, SUPPORTED_LANGUAGES

TINY_SPEAKER = "tiny_speaker"

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


# --- configs -----------------------------------------------------------------------------------------------------
def speech_tokenizer_config() -> dict[str, Any]:
    encoder = {
        "model_type": "mimi",
        "sampling_rate": SAMPLE_RATE,
        "frame_rate": 12.5,
        "audio_channels": 1,
        "hidden_size": HIDDEN,
        "num_filters": 4,
        "num_residual_layers": 1,
        "upsampling_ratios": [8, 6, 5, 4],
        "kernel_size": 7,
        "last_kernel_size": 3,
        "residual_kernel_size": 3,
        "dilation_growth_rate": 2,
        "use_causal_conv": True,
        "pad_mode": "constant",
        "compress": 2,
        "trim_right_ratio": 1.0,
        "codebook_size": CODEBOOK_SIZE,
        "codebook_dim": 16,
        "vector_quantization_hidden_dimension": 16,
        "num_quantizers": NUM_CODE_GROUPS,
        "num_semantic_quantizers": 1,
        "upsample_groups": HIDDEN,
        "num_hidden_layers": 1,
        "intermediate_size": 64,
        "num_attention_heads": HEADS,
        "num_key_value_heads": HEADS,
        "head_dim": HEAD_DIM,
        "hidden_act": "gelu",
        "max_position_embeddings": 8000,
        "sliding_window": 250,
        "use_cache": False,
        "use_streaming": False,
    }
    decoder = {
        "codebook_size": CODEBOOK_SIZE,
        "codebook_dim": 16,
        "hidden_size": HIDDEN,
        "latent_dim": HIDDEN,
        "max_position_embeddings": 8000,
        "rope_theta": 10000,
        "num_attention_heads": HEADS,
        "num_key_value_heads": HEADS,
        "head_dim": HEAD_DIM,
        "attention_bias": False,
        "sliding_window": 72,
        "intermediate_size": 64,
        "hidden_act": "silu",
        "layer_scale_initial_scale": 0.01,
        "rms_norm_eps": 1e-5,
        "num_hidden_layers": 1,
        "num_quantizers": NUM_CODE_GROUPS,
        "upsample_rates": [8, 5, 4, 3],
        "upsampling_ratios": [2, 2],
        "decoder_dim": 32,
        "attention_dropout": 0.0,
    }
    return {
        "architectures": ["Qwen3TTSTokenizerV2Model"],
        "model_type": "qwen3_tts_tokenizer_12hz",
        "encoder_config": encoder,
        "decoder_config": decoder,
        "encoder_valid_num_quantizers": NUM_CODE_GROUPS,
        "input_sample_rate": SAMPLE_RATE,
        "output_sample_rate": SAMPLE_RATE,
        "decode_upsample_rate": SAMPLES_PER_FRAME,
        "encode_downsample_rate": SAMPLES_PER_FRAME,
        "transformers_version": "4.57.3",
    }


FEATURE_EXTRACTOR_CONFIG = {
    "feature_extractor_type": "EncodecFeatureExtractor",
    "feature_size": 1,
    "padding_side": "right",
    "padding_value": 0.0,
    "return_attention_mask": True,
    "sampling_rate": SAMPLE_RATE,
    "chunk_length_s": None,
    "overlap": None,
}


def language_ids() -> dict[str, int]:
    names = [lang.lower() for lang in SUPPORTED_LANGUAGES if lang.lower() != "auto"]
    return {name: LANGUAGE_ID_START + i for i, name in enumerate(names)}


def tts_config(kind: str, text_ids: dict[str, int], text_vocab_size: int) -> dict[str, Any]:
    """config.json of one tiny checkpoint (`kind` = its tts_model_type)."""
    speakers = {TINY_SPEAKER: TINY_SPEAKER_SLOT} if kind == "custom_voice" else {}
    talker = {
        "vocab_size": CODEC_VOCAB_SIZE,
        "hidden_size": HIDDEN,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000,
        "attention_bias": False,
        "rope_scaling": {"rope_type": "default", "mrope_section": [4, 2, 2], "interleaved": True},
        "num_code_groups": NUM_CODE_GROUPS,
        "text_hidden_size": HIDDEN,
        "text_vocab_size": text_vocab_size,
        "codec_eos_token_id": CODEC_EOS_ID,
        "codec_think_id": CODEC_THINK_ID,
        "codec_nothink_id": CODEC_NOTHINK_ID,
        "codec_think_bos_id": CODEC_THINK_BOS_ID,
        "codec_think_eos_id": CODEC_THINK_EOS_ID,
        "codec_pad_id": CODEC_PAD_ID,
        "codec_bos_id": CODEC_BOS_ID,
        "codec_language_id": language_ids(),
        "pad_token_id": CODEC_PAD_ID,  # silences transformers' "Setting pad_token_id" warning on every call
        "spk_id": speakers,
        "spk_is_dialect": {name: False for name in speakers},
        "code_predictor_config": {
            "vocab_size": CODEBOOK_SIZE,
            "hidden_size": HIDDEN,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": HEADS,
            "num_key_value_heads": KV_HEADS,
            "head_dim": HEAD_DIM,
            "max_position_embeddings": 64,
            "rms_norm_eps": 1e-6,
            "rope_theta": 10000,
            "num_code_groups": NUM_CODE_GROUPS,
        },
    }
    speaker_encoder = {
        "mel_dim": 128,
        "enc_dim": HIDDEN,
        "enc_channels": [16, 16, 16, 16, 48],
        "enc_kernel_sizes": [5, 3, 3, 3, 1],
        "enc_dilations": [1, 2, 3, 4, 1],
        "enc_attention_channels": 8,
        "enc_res2net_scale": 4,
        "enc_se_channels": 8,
        "sample_rate": SAMPLE_RATE,
    }
    return {
        "architectures": ["Qwen3TTSForConditionalGeneration"],
        "model_type": "qwen3_tts",
        "tokenizer_type": "qwen3_tts_tokenizer_12hz",
        "tts_model_size": "1b7",
        "tts_model_type": kind,
        "im_start_token_id": text_ids["<|im_start|>"],
        "im_end_token_id": text_ids["<|im_end|>"],
        "tts_pad_token_id": text_ids["<|tts_pad|>"],
        "tts_bos_token_id": text_ids["<|tts_bos|>"],
        "tts_eos_token_id": text_ids["<|tts_eos|>"],
        "talker_config": talker,
        "speaker_encoder_config": speaker_encoder,
        "dtype": "float32",
        "transformers_version": "4.57.3",
    }


GENERATION_CONFIG = {
    "do_sample": True,
    "top_k": 50,
    "top_p": 1.0,
    "temperature": 0.9,
    "repetition_penalty": 1.05,
    "subtalker_dosample": True,
    "subtalker_top_k": 50,
    "subtalker_top_p": 1.0,
    "subtalker_temperature": 0.9,
    "max_new_tokens": MAX_NEW_TOKENS,
}
