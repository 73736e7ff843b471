"""Small synthetic datasets for tests, the demo and benchmarks.

`speech_clips(n)` makes ``n`` short clips of speech with espeak-ng when it is installed (real phonetics, so a
tiny model has something to learn), else pitched tone/noise sequences. `write_dataset_zip` packs clips in the
dataset-maker layout (``train.jsonl`` + ``data/seg_*.wav`` + ``data/ref_audio.wav``).
"""

from __future__ import annotations

import io
import json
import shutil
import stat
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore.",
    "A gentle breeze moved through the tall grass.",
    "Every morning the baker opens his shop at six.",
    "The old clock in the hall struck midnight.",
    "Bright stars filled the sky above the quiet town.",
    "He carried the heavy box up the narrow stairs.",
    "Rain fell softly on the roof all night long.",
    "The children laughed as the puppy chased its tail.",
    "Please close the window before you leave.",
    "A cup of warm tea is the best way to start the day.",
    "The river winds slowly through the green valley.",
)
REF_TEXT = "This is my reference voice, recorded clearly."
FALLBACK_RATE = 22050


@dataclass(frozen=True)
class Clip:
    text: str
    waveform: np.ndarray  # mono float32
    sample_rate: int

    @property
    def seconds(self) -> float:
        return len(self.waveform) / self.sample_rate

    def wav_bytes(self) -> bytes:
        buffer = io.BytesIO()
        soundfile.write(buffer, self.waveform, self.sample_rate, format="WAV", subtype="PCM_16")
        return buffer.getvalue()


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def _espeak(text: str, voice: str, speed: int, pitch: int) -> Clip:
    with tempfile.TemporaryDirectory(prefix="vft-espeak-") as folder:
        out = Path(folder) / "clip.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(out), text],
            check=True,
            capture_output=True,
            timeout=30,
        )
        data, rate = soundfile.read(str(out), dtype="float32", always_2d=True)
    return Clip(text, np.ascontiguousarray(data.mean(axis=1)), rate)


def _tones(text: str, rng: np.random.Generator, rate: int = FALLBACK_RATE) -> Clip:
    """A 'syllable' per word: a pitched tone with harmonics and a noise onset, then a short pause."""
    pieces = []
    base = rng.uniform(110, 220)
    for _ in text.split():
        seconds = rng.uniform(0.12, 0.25)
        t = np.arange(int(seconds * rate)) / rate
        f0 = base * rng.uniform(0.8, 1.3)
        tone = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in (1, 2, 3))
        envelope = np.sin(np.pi * t / seconds)
        noise = rng.normal(0, 0.3, t.size) * np.exp(-t * 40)
        pieces += [0.3 * envelope * tone + 0.2 * noise, np.zeros(int(rng.uniform(0.03, 0.08) * rate))]
    return Clip(text, np.concatenate(pieces).astype(np.float32), rate)


def speech_clips(count: int, seed: int = 0, use_espeak: bool | None = None) -> list[Clip]:
    """``count`` short clips (about 1.5-3 s each) with distinct texts."""
    use_espeak = espeak_available() if use_espeak is None else use_espeak
    rng = np.random.default_rng(seed)
    texts = [SENTENCES[(seed + i) % len(SENTENCES)] for i in range(count)]
    if use_espeak:
        return [_espeak(text, "en-us", 165, 45) for text in texts]
    return [_tones(text, rng) for text in texts]


def reference_clip(seed: int = 0, use_espeak: bool | None = None) -> Clip:
    use_espeak = espeak_available() if use_espeak is None else use_espeak
    if use_espeak:
        return _espeak(REF_TEXT, "en-us", 160, 45)
    return _tones(REF_TEXT, np.random.default_rng(seed + 1000))


def manifest_lines(clips: list[Clip], ref_name: str = "ref_audio.wav") -> list[str]:
    return [
        json.dumps({"audio": f"./data/seg_{i:08d}.wav", "text": clip.text, "ref_audio": f"./data/{ref_name}"})
        for i, clip in enumerate(clips, start=1)
    ]


def write_dataset_zip(
    path: Path, clips: list[Clip], *, ref: Clip | None = None, top_folder: str | None = None
) -> Path:
    """Write ``clips`` as a dataset zip in the dataset-maker layout, optionally inside ``top_folder``/."""
    ref = ref or reference_clip()
    prefix = f"{top_folder}/" if top_folder else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{prefix}train.jsonl", "\n".join(manifest_lines(clips)) + "\n")
        for i, clip in enumerate(clips, start=1):
            archive.writestr(f"{prefix}data/seg_{i:08d}.wav", clip.wav_bytes())
        archive.writestr(f"{prefix}data/ref_audio.wav", ref.wav_bytes())
    return path


def make_dataset_zip(path: Path, *, count: int = 4, seed: int = 0, top_folder: str | None = None) -> Path:
    """A ready-to-train dataset zip of ``count`` synthetic clips."""
    return write_dataset_zip(path, speech_clips(count, seed), ref=reference_clip(seed), top_folder=top_folder)


# --- datasets with one defect each (for tests of the intake and of every caller that reports its errors) -------

BAD_DATASET_KINDS = (
    "no-train-jsonl",  # only data/*.wav
    "parent-member",  # an extra member ../x.wav
    "absolute-member",  # an extra member /etc/x
    "symlink-member",  # data/link.wav is a symbolic link to /etc/passwd
    "zip-bomb",  # data/huge.wav: 40 MiB of zeros in a ~40 KiB zip
    "missing-wav",  # line 2 names ./data/nope.wav
    "text-as-wav",  # data/seg_00000002.wav is a text file
    "empty-text",  # line 2 has "text": ""
    "invalid-json-line-3",  # line 3 is not valid JSON
)


def _dataset_members(clips: list[Clip], ref: Clip, lines: list[str]) -> dict[str, bytes]:
    members = {"train.jsonl": ("\n".join(lines) + "\n").encode()}
    for i, clip in enumerate(clips, start=1):
        members[f"data/seg_{i:08d}.wav"] = clip.wav_bytes()
    members["data/ref_audio.wav"] = ref.wav_bytes()
    return members


def _special_member(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = mode << 16  # st_mode in the high bits, as zip tools on Unix store it
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def write_bad_dataset_zip(kind: str, path: Path, *, clips: list[Clip], ref: Clip | None = None) -> Path:
    """A dataset zip of ``clips`` (at least 3) with the defect ``kind`` names (see BAD_DATASET_KINDS)."""
    if kind not in BAD_DATASET_KINDS:
        raise ValueError(f"unknown bad dataset kind {kind!r}; one of {', '.join(BAD_DATASET_KINDS)}")
    ref = ref or reference_clip()
    lines = manifest_lines(clips)
    members: dict[str, bytes | tuple[zipfile.ZipInfo, bytes]] = {}
    if kind == "missing-wav":
        lines[1] = json.dumps(
            {"audio": "./data/nope.wav", "text": "Gone.", "ref_audio": "./data/ref_audio.wav"}
        )
    elif kind == "empty-text":
        lines[1] = json.dumps(
            {"audio": "./data/seg_00000002.wav", "text": "", "ref_audio": "./data/ref_audio.wav"}
        )
    elif kind == "invalid-json-line-3":
        lines[2] = lines[2][:-1] + ","
    members.update(_dataset_members(clips, ref, lines))
    if kind == "no-train-jsonl":
        del members["train.jsonl"]
    elif kind == "parent-member":
        members["../x.wav"] = ref.wav_bytes()
    elif kind == "absolute-member":
        members["/etc/x"] = b"written outside the job folder\n"
    elif kind == "symlink-member":
        members["data/link.wav"] = (_special_member("data/link.wav", stat.S_IFLNK | 0o777), b"/etc/passwd")
    elif kind == "zip-bomb":
        members["data/huge.wav"] = (
            _special_member("data/huge.wav", stat.S_IFREG | 0o644),
            bytes(40 * 1024 * 1024),
        )
    elif kind == "text-as-wav":
        members["data/seg_00000002.wav"] = b"this is a text file, not audio\n" * 20
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, member in members.items():
            if isinstance(member, tuple):
                archive.writestr(*member)
            else:
                archive.writestr(name, member)
    return path
