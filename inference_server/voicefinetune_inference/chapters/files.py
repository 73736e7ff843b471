"""A chapter's audio file in the asked-for format: WAV or FLAC (16-bit, 24 kHz), MP3, Ogg Opus through the streaming
encoders (`audio.encoding`), or M4B (AAC in MP4) with one chapter marker per item; written as the samples come."""

from __future__ import annotations

import contextlib
import io
from fractions import Fraction
from typing import BinaryIO

import numpy as np
import soundfile as sf

from voicefinetune.schemas import SAMPLE_RATE
from voicefinetune_inference.audio.encoding import StreamEncoder, make_encoder

# format -> (file extension, content type)
FORMATS: dict[str, tuple[str, str]] = {
    "wav": ("wav", "audio/wav"),
    "flac": ("flac", "audio/flac"),
    "mp3": ("mp3", "audio/mpeg"),
    "opus": ("opus", "audio/ogg"),
    "m4b": ("m4b", "audio/mp4"),
}
M4B_FRAME = 1024  # AAC's frame: the encoder takes whole frames


class ChapterAudio:
    """A chapter's audio file written as its samples come (float32 mono, 24 kHz), to a seekable binary ``sink``:
    WAV and FLAC by libsndfile (their headers get the true length when it closes), MP3 and Ogg Opus by the streaming
    encoders, M4B by FFmpeg with ``markers`` (start, end in samples, title) as its chapter marks. Only the samples
    not yet encoded are held, so a chapter of hours takes no more memory than one of seconds."""

    def __init__(self, sink: BinaryIO, audio_format: str, markers: list[tuple[int, int, str]]):
        if audio_format not in FORMATS:
            raise ValueError(f"unknown chapter format {audio_format!r}")
        self.sink = sink
        self.audio_format = audio_format
        self._sound: sf.SoundFile | None = None
        self._encoder: StreamEncoder | None = None
        self._m4b: _M4bWriter | None = None
        if audio_format in ("wav", "flac"):
            self._sound = sf.SoundFile(
                sink, "w", SAMPLE_RATE, 1, subtype="PCM_16", format=audio_format.upper()
            )
        elif audio_format == "m4b":
            self._m4b = _M4bWriter(sink, markers)
        else:
            self._encoder = make_encoder(audio_format)

    def write(self, samples: np.ndarray) -> None:
        mono = np.clip(np.asarray(samples, dtype=np.float32).reshape(-1), -1.0, 1.0)
        if self._sound is not None:
            self._sound.write(mono)
        elif self._m4b is not None:
            self._m4b.write(mono)
        elif self._encoder is not None:
            self.sink.write(self._encoder.encode(mono))

    def close(self) -> None:
        if self._sound is not None:
            self._sound.close()
        elif self._m4b is not None:
            self._m4b.close()
        elif self._encoder is not None:
            self.sink.write(self._encoder.finish())

    def __enter__(self) -> ChapterAudio:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            self.close()
        else:  # the error that stopped the writing is the one to report
            with contextlib.suppress(Exception):
                self.close()


def encode(samples: np.ndarray, audio_format: str, markers: list[tuple[int, int, str]]) -> bytes:
    """``samples`` as a whole file of ``audio_format`` (`ChapterAudio` at once)."""
    buffer = io.BytesIO()
    with ChapterAudio(buffer, audio_format, markers) as audio:
        audio.write(samples)
    return buffer.getvalue()


class _M4bWriter:
    """AAC in MP4 with chapter marks; the encoder takes whole frames, so a partial one waits for more samples."""

    def __init__(self, sink: BinaryIO, markers: list[tuple[int, int, str]]):
        import av

        self._container = av.open(sink, "w", format="ipod")  # MP4 writes its index last: the sink must seek
        stream = self._container.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        assert isinstance(stream, av.AudioStream)
        self._stream = stream
        self._container.set_chapters(
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
        self._pending = np.zeros(0, dtype=np.float32)
        self._pts = 0

    def write(self, mono: np.ndarray) -> None:
        self._pending = np.concatenate([self._pending, mono])
        whole = self._pending.size - self._pending.size % M4B_FRAME
        for offset in range(0, whole, M4B_FRAME):
            self._encode(self._pending[offset : offset + M4B_FRAME])
        self._pending = self._pending[whole:]

    def close(self) -> None:
        if self._pending.size:
            self._encode(self._pending)
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()

    def _encode(self, frame_samples: np.ndarray) -> None:
        import av

        frame = av.AudioFrame.from_ndarray(frame_samples[None], format="flt", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        self._pts += frame_samples.size
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
