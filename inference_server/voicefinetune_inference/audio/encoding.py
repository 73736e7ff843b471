"""Incremental audio encoders for streamed speech: float32 mono 24 kHz samples in, bytes of the chosen format out
as soon as the codec emits them.

``pcm`` is raw 16-bit little-endian samples; ``flac`` is written whole by libsndfile when the utterance ends (see
``WholeFlacEncoder``); every other format is muxed by FFmpeg through PyAV (``wav`` with the unknown-length header
streaming writers use, MP3 by LAME, Ogg Opus by libopus, AAC in ADTS frames). The
output is written to a sink that cannot seek, so each container is written front to back as it would be to a pipe.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from voicefinetune.schemas import SAMPLE_RATE

# response_format -> (media type, FFmpeg muxer, FFmpeg encoder); pcm needs no muxer.
FORMATS: dict[str, tuple[str, str | None, str | None]] = {
    "wav": ("audio/wav", "wav", "pcm_s16le"),
    "pcm": ("audio/pcm", None, None),
    "mp3": ("audio/mpeg", "mp3", "libmp3lame"),
    "opus": ("audio/ogg", "ogg", "libopus"),
    "flac": ("audio/flac", "flac", "flac"),
    "aac": ("audio/aac", "adts", "aac"),
}
# Ogg holds pages back for a second by default; 20 ms pages leave with every Opus packet. WAV without FFmpeg's
# LIST/INFO chunk: the canonical 44-byte header (sizes 0xFFFFFFFF: unknown length), which naive readers expect.
MUXER_OPTIONS = {"ogg": {"page_duration": "20000"}, "wav": {"fflags": "+bitexact"}}


class StreamEncoder(Protocol):
    def encode(self, samples: np.ndarray) -> bytes: ...

    def finish(self) -> bytes: ...


def media_type(response_format: str) -> str:
    return FORMATS[response_format][0]


def available_formats() -> list[str]:
    """The formats whose encoder this machine's FFmpeg (inside PyAV) has; ``pcm`` always."""
    import av

    names = []
    for name, (_, _, codec) in FORMATS.items():
        try:
            if codec is not None:
                av.codec.Codec(codec, "w")
            names.append(name)
        except Exception:  # noqa: BLE001 - an encoder this build lacks
            continue
    return names


def to_pcm16(samples: np.ndarray) -> bytes:
    clipped = np.clip(np.asarray(samples, dtype=np.float32).reshape(-1), -1.0, 1.0)
    return (clipped * 32767.0).round().astype("<i2").tobytes()


class PcmEncoder:
    """Raw 16-bit little-endian mono samples (OpenAI's ``pcm``)."""

    def encode(self, samples: np.ndarray) -> bytes:
        return to_pcm16(samples)

    def finish(self) -> bytes:
        return b""


class _Sink:
    """A write-only file for the muxer: collects what it writes until taken."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


class AvEncoder:
    """One container and one mono audio stream muxed by FFmpeg into a non-seekable sink."""

    def __init__(self, response_format: str, sample_rate: int = SAMPLE_RATE):
        import av

        _, muxer, codec = FORMATS[response_format]
        if muxer is None or codec is None:
            raise ValueError(f"response_format {response_format!r} has no FFmpeg container and codec")
        self._sink = _Sink()
        self._container = av.open(self._sink, "w", format=muxer, options=MUXER_OPTIONS.get(muxer, {}))
        stream = self._container.add_stream(codec, rate=sample_rate, layout="mono")
        assert isinstance(stream, av.AudioStream)  # every codec in FORMATS is an audio codec
        self._stream = stream
        self._sample_rate = sample_rate
        self._pts = 0
        self._closed = False

    def _frame(self, samples: np.ndarray):
        """A packed float frame; PyAV converts it to the encoder's sample format (s16 for FLAC, planar for AAC...)."""
        import av

        mono = np.clip(np.asarray(samples, dtype=np.float32).reshape(1, -1), -1.0, 1.0)
        frame = av.AudioFrame.from_ndarray(mono, format="flt", layout="mono")
        frame.sample_rate = self._sample_rate
        frame.pts = self._pts
        self._pts += mono.shape[1]
        return frame

    def encode(self, samples: np.ndarray) -> bytes:
        if np.asarray(samples).size:
            for packet in self._stream.encode(self._frame(samples)):
                self._container.mux(packet)
        return self._sink.take()

    def finish(self) -> bytes:
        if not self._closed:
            self._closed = True
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
        return self._sink.take()


class WholeFlacEncoder:
    """FLAC written once the utterance is complete: its STREAMINFO header then carries the true length. A FLAC
    streamed front to back must leave the length unknown, and libsndfile (``soundfile``) refuses to read such
    files, so FLAC is the one format sent whole (still over the same chunked response)."""

    def __init__(self) -> None:
        self._parts: list[np.ndarray] = []

    def encode(self, samples: np.ndarray) -> bytes:
        self._parts.append(np.asarray(samples, dtype=np.float32).reshape(-1))
        return b""

    def finish(self) -> bytes:
        import io

        import soundfile

        samples = np.concatenate(self._parts) if self._parts else np.zeros(0, dtype=np.float32)
        self._parts.clear()
        buffer = io.BytesIO()
        soundfile.write(buffer, np.clip(samples, -1.0, 1.0), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        return buffer.getvalue()


def make_encoder(response_format: str) -> StreamEncoder:
    if response_format not in FORMATS:
        raise ValueError(f"unknown response_format {response_format!r}")
    if response_format == "pcm":
        return PcmEncoder()
    if response_format == "flac":
        return WholeFlacEncoder()
    return AvEncoder(response_format)
