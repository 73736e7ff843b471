"""A chapter's audio file in the asked-for format: WAV (16-bit, 24 kHz), FLAC, MP3, Ogg Opus through the streaming
encoders (`audio.encoding`), or M4B (AAC in MP4) with one chapter marker per item."""

from __future__ import annotations

import io
from fractions import Fraction

import numpy as np

from voicefinetune.schemas import SAMPLE_RATE
from voicefinetune_inference.audio.encoding import make_encoder
from voicefinetune_inference.audio.wav import to_wav_bytes

# format -> (file extension, content type)
FORMATS: dict[str, tuple[str, str]] = {
    "wav": ("wav", "audio/wav"),
    "flac": ("flac", "audio/flac"),
    "mp3": ("mp3", "audio/mpeg"),
    "opus": ("opus", "audio/ogg"),
    "m4b": ("m4b", "audio/mp4"),
}
M4B_FRAME = 1024  # AAC's frame: the encoder takes whole frames


def encode(samples: np.ndarray, audio_format: str, markers: list[tuple[int, int, str]]) -> bytes:
    """``samples`` (float32 mono, 24 kHz) as a file of ``audio_format``; ``markers`` (start, end in samples, title)
    become chapter marks where the format has them (M4B)."""
    if audio_format == "wav":
        return to_wav_bytes(samples)
    if audio_format == "m4b":
        return _m4b(samples, markers)
    encoder = make_encoder(audio_format)
    return encoder.encode(samples) + encoder.finish()


def _m4b(samples: np.ndarray, markers: list[tuple[int, int, str]]) -> bytes:
    import av

    buffer = io.BytesIO()  # MP4 writes its index last: the sink must seek
    container = av.open(buffer, "w", format="ipod")
    stream = container.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
    assert isinstance(stream, av.AudioStream)
    container.set_chapters(
        [
            {
                "id": number,
                "start": start,
                "end": end,
                "time_base": Fraction(1, SAMPLE_RATE),
                "metadata": {"title": title},
            }
            for number, (start, end, title) in enumerate(markers, 1)
        ]
    )
    mono = np.clip(np.asarray(samples, dtype=np.float32).reshape(-1), -1.0, 1.0)
    for offset in range(0, mono.size, M4B_FRAME):
        frame = av.AudioFrame.from_ndarray(
            mono[None, offset : offset + M4B_FRAME], format="flt", layout="mono"
        )
        frame.sample_rate = SAMPLE_RATE
        frame.pts = offset
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)
    container.close()
    return buffer.getvalue()
