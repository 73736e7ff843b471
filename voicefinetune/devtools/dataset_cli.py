"""`vft dataset`: check a dataset zip as the server will, make one from a folder of WAVs, or write a sample folder.

``make FOLDER`` reads one of two layouts (the ones dataset-maker tools export):

- LJSpeech: ``FOLDER/metadata.csv`` with one ``name|transcript`` line per clip (a third ``|normalized text``
  column, when present and not empty, is used instead) and the audio in ``FOLDER/wavs/name.wav``;
- ``FOLDER/train.jsonl`` with ``{"audio": ..., "text": ..., "ref_audio": ...}`` lines (paths relative to FOLDER).

The reference clip is ``--ref``, else ``FOLDER/ref_audio.wav``, else the first clip. Every clip is converted to
24 kHz mono 16-bit WAV and packed as ``train.jsonl`` + ``data/*.wav``; the zip is then checked like ``check``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import soundfile
from rich.console import Console
from rich.table import Table

from ..dataset import DatasetReport, load_audio, validate_dataset
from ..dataset_layout import MANIFEST
from ..schemas import SAMPLE_RATE

LJSPEECH_METADATA = "metadata.csv"
LJSPEECH_AUDIO = "wavs"
REF_NAME = "ref_audio.wav"
SAMPLE_CLIPS = 6
LOCATED = re.compile(
    r"((?:\S+ )?line \d+|--ref): (.*)", re.DOTALL
)  # "line 3: ...", "metadata.csv line 3: ..."

console = Console()


@dataclass(frozen=True)
class SourceClip:
    where: str  # the source line that named it, for messages
    audio: Path
    text: str
    ref_audio: Path | None = None
    language: str | None = None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vft dataset", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="validate a dataset zip exactly as POST /finetune does")
    check.add_argument("zip", type=Path)
    check.add_argument("--speaker-name", default=None, help="also check the speaker_name you will send")
    make = commands.add_parser(
        "make", help="build a dataset zip from a folder (metadata.csv + wavs/, or train.jsonl)"
    )
    make.add_argument("folder", type=Path)
    make.add_argument("-o", "--output", type=Path, default=None, help="the zip to write (default FOLDER.zip)")
    make.add_argument("--ref", type=Path, default=None, help="reference clip (default FOLDER/ref_audio.wav)")
    sample = commands.add_parser("sample", help="write a small synthetic folder in the metadata.csv layout")
    sample.add_argument("dir", type=Path)
    sample.add_argument(
        "--clips", type=int, default=SAMPLE_CLIPS, help=f"how many clips (default {SAMPLE_CLIPS})"
    )
    return parser.parse_args(argv)


# --- check -------------------------------------------------------------------------------------------------------


def print_report(report: DatasetReport, what: Path) -> int:
    if not report.problems:
        console.print(
            f"[green]OK[/] {what}: {report.clips} clips, {report.seconds / 60:.2f} minutes of audio "
            f"({report.seconds:.1f} s)"
        )
        return 0
    table = Table("where", "what to fix", title=f"{what}: {len(report.problems)} problem(s)", show_lines=True)
    for problem in report.problems:
        located = LOCATED.match(problem)
        table.add_row(*(located.groups() if located else ("", problem)))
    console.print(table)
    return 1


def check(args: argparse.Namespace) -> int:
    if not args.zip.is_file():
        console.print(f"[red]no such file:[/] {args.zip}")
        return 2
    return print_report(validate_dataset(args.zip, speaker_name=args.speaker_name), args.zip)


# --- make --------------------------------------------------------------------------------------------------------


def read_ljspeech(folder: Path) -> tuple[list[SourceClip], list[str]]:
    clips: list[SourceClip] = []
    problems: list[str] = []
    with open(folder / LJSPEECH_METADATA, encoding="utf-8-sig", newline="") as handle:
        rows = csv.reader(handle, delimiter="|", quoting=csv.QUOTE_NONE)
        for number, row in enumerate(rows, start=1):
            if not any(cell.strip() for cell in row):
                continue
            where = f"{LJSPEECH_METADATA} line {number}"
            if len(row) < 2:
                problems.append(f"{where}: expected name|transcript")
                continue
            name = row[0].strip()
            text = (row[2] if len(row) > 2 and row[2].strip() else row[1]).strip()
            file = name if name.lower().endswith(".wav") else f"{name}.wav"
            clips.append(SourceClip(where, folder / LJSPEECH_AUDIO / file, text))
    return clips, problems


def read_jsonl(folder: Path) -> tuple[list[SourceClip], list[str]]:
    clips: list[SourceClip] = []
    problems: list[str] = []
    for number, raw in enumerate((folder / MANIFEST).read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{MANIFEST} line {number}"
        try:
            record = json.loads(raw)
            audio, text = record["audio"], record["text"]
        except (ValueError, KeyError, TypeError) as exc:
            problems.append(f"{where}: expected a JSON object with audio and text ({exc})")
            continue
        ref = record.get("ref_audio")
        clips.append(
            SourceClip(where, folder / audio, text, folder / ref if ref else None, record.get("language"))
        )
    return clips, problems


def read_folder(folder: Path) -> tuple[list[SourceClip], list[str]]:
    if (folder / MANIFEST).is_file():
        return read_jsonl(folder)
    if (folder / LJSPEECH_METADATA).is_file():
        return read_ljspeech(folder)
    return [], [f"{folder} has neither {LJSPEECH_METADATA} (with {LJSPEECH_AUDIO}/) nor {MANIFEST}"]


def wav_bytes(path: Path) -> bytes:
    """The file as 24 kHz mono 16-bit WAV."""
    buffer = io.BytesIO()
    soundfile.write(buffer, load_audio(path), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def build_zip(clips: list[SourceClip], ref: Path, output: Path) -> list[str]:
    """Write the dataset zip; the problems of files that are missing or not audio (then nothing is written)."""
    members: dict[str, bytes] = {}
    names: dict[Path, str] = {}
    problems: list[str] = []

    def member(path: Path, where: str, name: str) -> str | None:
        if path not in names:
            if not path.is_file():
                problems.append(f"{where}: {path} is missing")
                return None
            try:
                members[f"data/{name}"] = wav_bytes(path)
            except (RuntimeError, ValueError, soundfile.LibsndfileError) as exc:
                problems.append(f"{where}: {path} could not be read as audio ({exc})")
                return None
            names[path] = name
        return f"./data/{names[path]}"

    default_ref = member(ref, "--ref", REF_NAME)
    lines = []
    for i, clip in enumerate(clips, start=1):
        audio = member(clip.audio, clip.where, f"seg_{i:08d}.wav")
        own_ref = member(clip.ref_audio, clip.where, f"ref_{i:08d}.wav") if clip.ref_audio else default_ref
        record = {"audio": audio, "text": clip.text, "ref_audio": own_ref}
        lines.append(json.dumps(record | ({"language": clip.language} if clip.language else {})))
    if problems:
        return problems
    output.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(output, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(MANIFEST, "\n".join(lines) + "\n")
        for name, data in members.items():
            archive.writestr(name, data)
    return []


def make(args: argparse.Namespace) -> int:
    folder: Path = args.folder
    if not folder.is_dir():
        console.print(f"[red]no such folder:[/] {folder}")
        return 2
    clips, problems = read_folder(folder)
    if not clips and not problems:
        problems = [f"{folder}: no clips listed"]
    ref = args.ref or (folder / REF_NAME if (folder / REF_NAME).is_file() else None)
    output = args.output or folder.with_suffix(".zip")
    if not problems:
        problems = build_zip(clips, ref or clips[0].audio, output)
    if problems:
        return print_report(DatasetReport(problems), folder)
    console.print(f"wrote {output} ({len(clips)} clips at {SAMPLE_RATE} Hz)")
    return print_report(validate_dataset(output), output)


# --- sample ------------------------------------------------------------------------------------------------------


def sample(args: argparse.Namespace) -> int:
    from .sample_data import reference_clip, speech_clips

    folder: Path = args.dir
    (folder / LJSPEECH_AUDIO).mkdir(parents=True, exist_ok=True)
    rows = []
    for i, clip in enumerate(speech_clips(args.clips), start=1):
        name = f"sample_{i:02d}"
        (folder / LJSPEECH_AUDIO / f"{name}.wav").write_bytes(clip.wav_bytes())
        rows.append(f"{name}|{clip.text}")
    (folder / LJSPEECH_METADATA).write_text("\n".join(rows) + "\n", encoding="utf-8")
    (folder / REF_NAME).write_bytes(reference_clip().wav_bytes())
    console.print(f"wrote {folder}: {LJSPEECH_METADATA}, {len(rows)} clips in {LJSPEECH_AUDIO}/, {REF_NAME}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return {"check": check, "make": make, "sample": sample}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
