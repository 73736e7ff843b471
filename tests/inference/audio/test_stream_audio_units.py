"""The streaming building blocks on their own: sentence splitting, incremental encoders, the time stretch."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
import soundfile as sf
from voicefinetune_inference.audio.encoding import (
    AvEncoder,
    available_formats,
    make_encoder,
    media_type,
)
from voicefinetune_inference.audio.sentences import split_sentences
from voicefinetune_inference.audio.time_stretch import TimeStretch, tempo_steps

RATE = 24000


def tone(seconds: float, hz: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_sentences_split_at_boundaries_and_join_short_ones():
    assert split_sentences("Hello there. How are you? I am fine! Ok.") == [
        "Hello there.",
        "How are you?",
        "I am fine! Ok.",
    ]
    assert split_sentences("第一句话。第二句话！") == ["第一句话。第二句话！"]
    assert split_sentences("他说：“你好吗？”我很好。", min_chars=4) == ["他说：“你好吗？”", "我很好。"]
    assert split_sentences('"Quoted here." Next one here.') == ['"Quoted here."', "Next one here."]
    assert split_sentences("One line\nanother line here") == ["One line another line here"]
    long = split_sentences("word " * 100, max_chars=60)
    assert all(len(part) <= 60 for part in long) and " ".join(long).split() == ["word"] * 100


def test_every_format_has_an_encoder_here():
    assert available_formats() == ["wav", "pcm", "mp3", "opus", "flac", "aac"]
    assert media_type("opus") == "audio/ogg" and media_type("mp3") == "audio/mpeg"


@pytest.mark.parametrize("response_format", ["wav", "pcm", "mp3", "opus", "aac"])
def test_encoders_emit_bytes_before_the_end_and_decode_to_24_khz(response_format):
    encoder = make_encoder(response_format)
    audio = tone(1.0)
    parts = [encoder.encode(audio[i : i + 2400]) for i in range(0, audio.size, 2400)]
    emitted_early = sum(1 for part in parts if part)
    parts.append(encoder.finish())
    data = b"".join(parts)
    assert emitted_early >= 5, [len(part) for part in parts]
    if response_format == "pcm":
        assert len(data) == audio.size * 2
        return
    if response_format == "opus":
        decoded, rate = sf.read(io.BytesIO(data), dtype="float32")
        samples = decoded.size
    else:
        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.audio[0]
            rate = stream.codec_context.sample_rate
            samples = sum(frame.samples for frame in container.decode(stream))
    assert rate == RATE
    assert samples == pytest.approx(audio.size, rel=0.1)


def test_flac_is_written_whole_with_its_length_so_soundfile_reads_it():
    encoder = make_encoder("flac")
    audio = tone(1.0)
    assert not any(encoder.encode(audio[i : i + 2400]) for i in range(0, audio.size, 2400))
    decoded, rate = sf.read(io.BytesIO(encoder.finish()), dtype="float32")
    assert rate == RATE and decoded.size == audio.size
    assert np.abs(decoded - audio).max() < 1e-3  # 16-bit PCM inside, lossless


def test_a_flac_streamed_front_to_back_is_read_by_ffmpeg_but_not_by_soundfile():
    """Why `flac` is the one format sent whole (README): FFmpeg's FLAC muxer, writing to a pipe, leaves the length
    in STREAMINFO unknown; PyAV decodes that, libsndfile (soundfile.read) does not. When this fails, soundfile reads
    streamed FLAC and the server can stream it like the other formats."""
    audio = tone(1.0)
    encoder = AvEncoder("flac")
    data = (
        b"".join(encoder.encode(audio[i : i + 2400]) for i in range(0, audio.size, 2400)) + encoder.finish()
    )
    assert (
        data[:4] == b"fLaC" and int.from_bytes(data[21:26], "big") & (2**36 - 1) == 0
    )  # total samples: unknown
    with av.open(io.BytesIO(data)) as container:
        decoded = np.concatenate([frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)])
    assert np.abs(decoded / 32768.0 - audio).max() < 1e-3
    with pytest.raises((ValueError, MemoryError, sf.LibsndfileError)):
        sf.read(io.BytesIO(data), dtype="float32")


@pytest.mark.parametrize("speed", [0.25, 0.5, 2.0, 4.0])
def test_time_stretch_changes_duration_not_pitch(speed):
    audio = tone(2.0)
    stretch = TimeStretch(speed)
    out = np.concatenate(
        [stretch.push(audio[i : i + 4800]) for i in range(0, audio.size, 4800)] + [stretch.flush()]
    )
    assert out.size / audio.size == pytest.approx(1 / speed, rel=0.03)
    spectrum = np.abs(np.fft.rfft(out))
    assert np.argmax(spectrum) * RATE / out.size == pytest.approx(220.0, abs=3.0)


def test_tempo_steps_stay_in_the_filters_best_range():
    assert tempo_steps(4.0) == [2.0, 2.0]
    assert tempo_steps(0.25) == [0.5, 0.5]
    assert tempo_steps(1.5) == [1.5]


def test_streamed_wav_has_the_canonical_header_with_unknown_length():
    data = make_encoder("wav").encode(tone(0.1))
    assert data[:4] == b"RIFF" and data[4:8] == b"\xff\xff\xff\xff" and data[8:16] == b"WAVEfmt "
    assert data[36:44] == b"data\xff\xff\xff\xff" and len(data) == 44 + 2400 * 2
