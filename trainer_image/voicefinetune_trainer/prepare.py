"""Samples → prepared samples: tokenized texts, checked audio codes and the speaker-encoder embedding of each
distinct reference audio."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch

from voicefinetune.schemas import SAMPLE_RATE
from voicefinetune_trainer.batching import ROLE_TOKENS, TRAILING_TOKENS, PreparedSample, assistant_text
from voicefinetune_trainer.codes import AUTO_LANGUAGE, Sample


def _language_id(model: Any, language: str) -> int | None:
    if language.lower() == AUTO_LANGUAGE:
        return None
    languages = model.config.talker_config.codec_language_id or {}
    if language.lower() not in languages:
        raise ValueError(
            f"language {language!r} is not supported by this model; use one of {sorted(languages)} or 'auto'"
        )
    return int(languages[language.lower()])


def assign_layouts(samples: Sequence[Sample], languages: Sequence[str]) -> list[Sample]:
    """Each sample's prompt layout: its language's layout (what generate builds for a request in that language;
    /infer's default is English) at even positions, the auto layout at odd ones, so either layout a request picks
    is one the voice trained on. A language of "Auto" trains the auto layout only."""
    return [
        replace(sample, language=AUTO_LANGUAGE if index % 2 else language)
        for index, (sample, language) in enumerate(zip(samples, languages, strict=True))
    ]


def prepare_samples(tts: Any, samples: Sequence[Sample]) -> list[PreparedSample]:
    """Tokenize texts and embed each distinct reference audio once with the (frozen) speaker encoder."""
    model = tts.model
    groups = model.config.talker_config.num_code_groups
    codebook = model.config.talker_config.code_predictor_config.vocab_size
    embeddings: dict[bytes, torch.Tensor] = {}
    prepared = []
    for index, sample in enumerate(samples):
        codes = sample.audio_codes
        if codes.ndim != 2 or codes.shape[1] != groups or codes.shape[0] == 0:
            raise ValueError(
                f"sample {index}: audio_codes must be (frames ≥ 1, {groups}), got {tuple(codes.shape)}"
            )
        if int(codes.min()) < 0 or int(codes.max()) >= codebook:
            raise ValueError(
                f"sample {index}: audio codes must lie in [0, {codebook}); encode with this model"
            )
        ids = tts.processor(text=assistant_text(sample.text), return_tensors="pt")["input_ids"].reshape(-1)
        text_ids = ids[ROLE_TOKENS:-TRAILING_TOKENS]
        if text_ids.numel() == 0:
            raise ValueError(f"sample {index}: text {sample.text!r} has no tokens")
        key = hashlib.blake2b(sample.ref_audio.tobytes(), digest_size=16).digest()
        if key not in embeddings:
            embedding = model.extract_speaker_embedding(sample.ref_audio, SAMPLE_RATE)
            embeddings[key] = embedding.detach().to("cpu", torch.float32).clone()  # out of inference mode
        prepared.append(
            PreparedSample(
                role_ids=ids[:ROLE_TOKENS].clone(),
                text_ids=text_ids.clone(),
                codes=codes.to(torch.long),
                speaker_embedding=embeddings[key],
                language_id=_language_id(model, sample.language),
            )
        )
    return prepared
