"""Dataset intake: a dataset zip (``train.jsonl`` + ``data/*.wav``) checked, extracted safely and resampled.

Layout (the dataset-maker tool's export; it may also sit inside the folder the user zipped, and audio paths may
also be written from the zip's top)::

    train.jsonl   {"audio": "./data/seg_00000001.wav", "text": "Hello.", "ref_audio": "./data/ref_audio.wav"}
    data/*.wav

A line may also give its clip's `"language"` (a /infer language name; default: the job's `language`).

Every line is checked and every problem is reported at once, with its line number, so a user fixes a dataset in
one round. Audio comes out as 24 kHz mono float32, what the speech tokenizer expects.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath

import numpy as np
import soundfile

from .audio_limits import MAX_CLIP_SECONDS, MAX_REF_SECONDS, audio_refusal
from .dataset_layout import MANIFEST, check_layout
from .resampling import resampled_length, to_sample_rate
from .schemas import SAMPLE_RATE, InvalidInput, check_language, check_speaker_name
from .zipsafe import UnsafeArchive, ZipLimits, extract_zip, inspect_zip

IGNORED_TOP_FOLDERS = frozenset({"__MACOSX"})  # macOS Finder adds resource forks there
IGNORED_FILES = frozenset({"thumbs.db", "desktop.ini"})  # Windows Explorer's
MAX_REPORTED_PROBLEMS = 200


class DatasetError(InvalidInput):
    """The dataset cannot be used; the message says what to fix. ``problems`` lists each one."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or [message]


@dataclass(frozen=True)
class DatasetLimits:
    zip: ZipLimits = field(default_factory=ZipLimits)
    min_seconds: float = 0.3
    max_seconds: float = MAX_CLIP_SECONDS
    max_ref_seconds: float = MAX_REF_SECONDS
    max_lines: int = 100_000


@dataclass(frozen=True)
class ClipEntry:
    """One checked line of train.jsonl; paths are absolute, inside the extracted dataset."""

    line: int
    text: str
    audio: Path
    ref_audio: Path
    seconds: float
    language: str | None = None  # the line's own "language" (canonical spelling), when it gives one
    samples: int = 0  # the clip's length once decoded at 24 kHz, known from its header


@dataclass(frozen=True, eq=False)
class LazyAudio:
    """Audio decoded (24 kHz mono float32) only when ``decode()`` is called; ``samples`` is its decoded length."""

    samples: int
    decode: Callable[[], np.ndarray]


@dataclass(frozen=True)
class LazyClip:
    """A checked clip whose audio is decoded on demand; its reference is decoded once per file and kept."""

    line: int
    text: str
    audio: LazyAudio
    ref_audio: LazyAudio
    language: str | None = None


@dataclass(frozen=True)
class TrainingClip:
    text: str
    audio: np.ndarray  # 24 kHz mono float32
    ref_audio: np.ndarray  # 24 kHz mono float32
    language: str | None = None


@dataclass
class Dataset:
    root: Path
    entries: list[ClipEntry]

    @property
    def total_seconds(self) -> float:
        return sum(entry.seconds for entry in self.entries)

    def clips(self) -> list[LazyClip]:
        """Every clip, in train.jsonl order, with nothing decoded yet: a clip's audio is decoded each time it is
        asked for and not kept; each reference file is decoded once, when first asked for, and kept."""
        refs: dict[Path, np.ndarray] = {}

        def reference(path: Path, line: int) -> np.ndarray:
            if path not in refs:
                refs[path] = self._decode(path, line)
            return refs[path]

        return [
            LazyClip(
                e.line,
                e.text,
                LazyAudio(e.samples, partial(self._decode, e.audio, e.line)),
                LazyAudio(0, partial(reference, e.ref_audio, e.line)),
                e.language,
            )
            for e in self.entries
        ]

    def load(self) -> list[TrainingClip]:
        """Decode every clip at once (each reference file once); the trainer streams ``clips()`` instead."""
        return [
            TrainingClip(c.text, c.audio.decode(), c.ref_audio.decode(), c.language) for c in self.clips()
        ]

    def _decode(self, path: Path, line: int) -> np.ndarray:
        try:
            return load_audio(path)
        except (RuntimeError, ValueError, soundfile.LibsndfileError) as exc:
            rel = path.relative_to(self.root).as_posix()
            raise DatasetError(
                f"line {line}: {rel} could not be decoded ({exc}): export it again as WAV"
            ) from exc


def load_audio(path: Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A file decoded to mono float32 at ``sample_rate``."""
    data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return np.ascontiguousarray(to_sample_rate(data.mean(axis=1), rate, sample_rate))


# --- archive -----------------------------------------------------------------------------------------------------


def _is_clutter(path: PurePosixPath) -> bool:
    """Files that zipping tools and file managers add beside a dataset (macOS resource forks, .DS_Store...)."""
    return (
        path.parts[0] in IGNORED_TOP_FOLDERS
        or any(part.startswith(".") for part in path.parts)
        or (path.name.lower() in IGNORED_FILES)
    )


def manifest_folder(files: list[PurePosixPath]) -> PurePosixPath:
    """Where train.jsonl is: the archive root, else the one folder holding a train.jsonl (the dataset folder the
    user zipped, however deep the zip tool nested it)."""
    if PurePosixPath(MANIFEST) in files:
        return PurePosixPath()
    found = sorted(
        (f for f in files if f.name == MANIFEST and not _is_clutter(f)), key=lambda f: len(f.parts)
    )
    if len(found) == 1:
        return found[0].parent
    if found:
        raise DatasetError(
            f"the zip holds several train.jsonl ({', '.join(f.as_posix() for f in found[:3])}): zip one dataset "
            "folder, with train.jsonl next to its data/ folder"
        )
    raise DatasetError(
        "missing train.jsonl: put train.jsonl at the top of the zip, next to the data/ folder "
        "(or inside the single folder the zip contains)"
    )


def open_dataset(zip_path: Path, dest: Path, limits: DatasetLimits | None = None) -> Dataset:
    """Check ``zip_path``, extract it into ``dest`` (replaced) and check every line of train.jsonl.

    Nothing is written when the archive itself is unsafe or has no train.jsonl; ``dest`` is removed when a
    line is bad.
    """
    limits = limits or DatasetLimits()
    try:
        folder = manifest_folder(inspect_zip(zip_path, limits.zip))
        if dest.exists():
            shutil.rmtree(dest)
        extract_zip(zip_path, dest, limits.zip)
    except UnsafeArchive as exc:
        raise DatasetError(str(exc)) from exc
    root = dest.joinpath(*folder.parts).resolve()
    try:
        entries = read_manifest(root, limits, archive_root=dest.resolve())
    except DatasetError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return Dataset(root, entries)


@dataclass(frozen=True)
class DatasetReport:
    """What ``validate_dataset`` found: every problem to fix (and ``message``, the one error the server reports
    them in), else the clips and their total duration."""

    problems: list[str]
    clips: int = 0
    seconds: float = 0.0
    message: str = ""


def validate_dataset(
    zip_path: Path,
    work_dir: Path | None = None,
    limits: DatasetLimits | None = None,
    speaker_name: str | None = None,
) -> DatasetReport:
    """Every check the server makes of a dataset (the upload's layout, the archive, each train.jsonl line and its
    audio, the speaker name when given), with every problem collected; the zip is extracted into a temporary folder
    under ``work_dir`` (default: the system's) and removed."""
    problems: list[str] = []
    if speaker_name is not None:
        try:
            check_speaker_name(speaker_name)
        except InvalidInput as exc:
            problems.append(str(exc))
    try:
        check_layout(zip_path)
    except InvalidInput as exc:
        return DatasetReport([*problems, str(exc)], message=str(exc))
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vft-dataset-", dir=work_dir) as folder:
        try:
            dataset = open_dataset(zip_path, Path(folder) / "dataset", limits)
        except DatasetError as exc:
            return DatasetReport([*problems, *exc.problems], message=str(exc))
        return DatasetReport(problems, len(dataset.entries), dataset.total_seconds, "; ".join(problems))


# --- train.jsonl -------------------------------------------------------------------------------------------------


class _AudioChecker:
    """Resolves a line's path inside the dataset and checks the file once, however many lines name it."""

    def __init__(self, root: Path, limits: DatasetLimits, archive_root: Path | None = None):
        self.root = root
        self.archive_root = archive_root or root
        self.limits = limits
        self._seconds: dict[Path, float | str] = {}
        self.samples: dict[Path, int] = {}  # each checked file's length once decoded at 24 kHz

    def resolve(self, value: str, key: str) -> Path:
        """The file a line names; ValueError (with the fix) when it is outside the archive or absent."""
        posix = value.replace("\\", "/")
        if posix.startswith("/") or (len(posix) > 1 and posix[1] == ":"):
            raise ValueError(
                f"{key} path {value!r} is absolute: use a path inside the zip such as ./data/x.wav"
            )
        path = (self.root / posix).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(
                f"{key} path {value!r} points outside the archive: use a path such as ./data/x.wav"
            )
        if not path.is_file():
            # Some exports name files from the zip's top ("Hero_dataset/data/x.wav") rather than from train.jsonl.
            from_top = (self.archive_root / posix).resolve()
            if from_top.is_relative_to(self.archive_root) and from_top.is_file():
                return from_top
            raise ValueError(f"{key} file {value!r} is missing from the zip: add it or fix the path")
        return path

    def seconds(self, path: Path, value: str, key: str) -> float:
        if path not in self._seconds:
            try:
                info = soundfile.info(str(path))
                refusal = audio_refusal(info, what=f"{key} {value!r}", max_seconds=float("inf"))
                self.samples[path] = resampled_length(info.frames, info.samplerate) if info.samplerate else 0
                self._seconds[path] = (
                    f"{refusal}: convert it"
                    if refusal
                    else info.frames / info.samplerate
                    if info.samplerate
                    else 0.0
                )
            except (RuntimeError, soundfile.LibsndfileError) as exc:
                reason = str(exc).split(": ", 1)[-1] if str(exc) else type(exc).__name__
                self._seconds[path] = (
                    f"{key} {value!r} could not be decoded as audio ({reason}): export it as a WAV file"
                )
        result = self._seconds[path]
        if isinstance(result, str):
            raise ValueError(result)
        return result

    def check(self, value: str, key: str, max_seconds: float) -> tuple[Path, float]:
        path = self.resolve(value, key)
        seconds = self.seconds(path, value, key)
        if not self.limits.min_seconds <= seconds <= max_seconds:
            raise ValueError(
                f"{key} {value!r} lasts {seconds:.2f} s; clips must last "
                f"{self.limits.min_seconds:g} to {max_seconds:g} s: trim, split or remove it"
            )
        return path, seconds


def _check_line(
    number: int, raw: str, audio: _AudioChecker, limits: DatasetLimits
) -> tuple[ClipEntry | None, list[str]]:
    try:
        record = json.loads(raw)
    except json.JSONDecodeError as exc:
        return None, [
            f"line {number}: invalid JSON ({exc.msg} at column {exc.colno}): write one JSON object per line"
        ]
    if not isinstance(record, dict):
        return None, [f"line {number}: expected a JSON object with audio, text and ref_audio"]
    problems: list[str] = []
    text = record.get("text")
    if not isinstance(text, str) or not text.strip():
        problems.append(f"line {number}: 'text' is empty or missing: give the transcript of the clip")
    language = record.get("language")
    if language is not None:
        try:
            language = (
                check_language(language) if isinstance(language, str) else check_language(repr(language))
            )
        except InvalidInput as exc:
            problems.append(f"line {number}: 'language': {exc}")
    found: dict[str, tuple[Path, float]] = {}
    for key, max_seconds in (("audio", limits.max_seconds), ("ref_audio", limits.max_ref_seconds)):
        value = record.get(key)
        if not isinstance(value, str) or not value.strip():
            problems.append(
                f"line {number}: '{key}' is missing: give a path inside the zip such as ./data/x.wav"
            )
            continue
        try:
            found[key] = audio.check(value.strip(), key, max_seconds)
        except ValueError as exc:
            problems.append(f"line {number}: {exc}")
    if problems or not isinstance(text, str):  # a text that is not a string is one of the problems
        return None, problems
    (audio_path, seconds), (ref_path, _) = found["audio"], found["ref_audio"]
    samples = audio.samples.get(audio_path, 0)
    return ClipEntry(number, text.strip(), audio_path, ref_path, seconds, language, samples), []


def read_manifest(
    root: Path, limits: DatasetLimits | None = None, archive_root: Path | None = None
) -> list[ClipEntry]:
    """Check every line of ``root/train.jsonl``; DatasetError lists every bad line with its number.

    Paths are relative to ``root`` (or, failing that, to ``archive_root``, the extracted zip's top) and must stay
    inside ``archive_root``.
    """
    limits = limits or DatasetLimits()
    try:
        lines = (root / MANIFEST).read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError as exc:
        raise DatasetError(
            "missing train.jsonl: put it at the top of the zip, next to the data/ folder"
        ) from exc
    except UnicodeDecodeError as exc:
        raise DatasetError(f"train.jsonl is not UTF-8 text ({exc.reason}): save it as UTF-8") from exc
    if len(lines) > limits.max_lines:
        raise DatasetError(
            f"train.jsonl has {len(lines)} lines; the limit is {limits.max_lines}: split the dataset"
        )
    checker = _AudioChecker(root, limits, archive_root)
    entries: list[ClipEntry] = []
    problems: list[str] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        entry, line_problems = _check_line(number, raw, checker, limits)
        problems += line_problems
        if entry is not None:
            entries.append(entry)
    if problems:
        shown = problems[:MAX_REPORTED_PROBLEMS]
        more = len(problems) - len(shown)
        summary = "; ".join(shown) + (f"; and {more} more" if more else "")
        bad_lines = len({p.split(":", 1)[0] for p in problems})
        raise DatasetError(f"train.jsonl has {bad_lines} bad line(s): {summary}", problems)
    if not entries:
        raise DatasetError(
            "train.jsonl has no clips: add one JSON line per clip with audio, text and ref_audio"
        )
    return entries
