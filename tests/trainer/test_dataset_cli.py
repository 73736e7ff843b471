"""`vft dataset` as a user runs it: `check` names every problem the server would, `make` builds a zip from an
LJSpeech-style folder that passes `check` and trains, `sample` writes a folder `make` accepts."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
from voicefinetune_trainer.pipeline import TrainRequest, run_training

from voicefinetune.devtools.sample_data import Clip, manifest_lines
from voicefinetune.schemas import SAMPLE_RATE
from voicefinetune.settings import Settings

WIDE = {**os.environ, "COLUMNS": "400"}  # rich wraps table cells to the terminal's width


def vft(*args: str | Path) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("vft")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "voicefinetune.cli"]
    return subprocess.run([*command, *map(str, args)], env=WIDE, capture_output=True, text=True, timeout=50)


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_check_names_a_short_clip_a_missing_wav_and_a_bad_json_line_at_once(tmp_path, clips, ref_clip):
    short = Clip("Too short.", np.zeros(int(0.2 * SAMPLE_RATE), dtype=np.float32) + 0.1, SAMPLE_RATE)
    lines = manifest_lines([short, *clips[:3]])
    lines[1] = json.dumps({"audio": "./data/nope.wav", "text": "Gone.", "ref_audio": "./data/ref_audio.wav"})
    lines[2] = lines[2][:-1] + ","
    members = {"train.jsonl": ("\n".join(lines) + "\n").encode(), "data/ref_audio.wav": ref_clip.wav_bytes()}
    for i, clip in enumerate([short, *clips[:3]], start=1):
        members[f"data/seg_{i:08d}.wav"] = clip.wav_bytes()
    result = vft("dataset", "check", write_zip(tmp_path / "bad.zip", members))
    assert result.returncode == 1, result.stdout + result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("│")]
    cells = [[cell.strip() for cell in row.strip("│").split("│")] for row in rows]
    assert [where for where, _ in cells] == ["line 1", "line 2", "line 3"], result.stdout
    assert cells[0][1] == (
        "audio './data/seg_00000001.wav' lasts 0.20 s; clips must last 0.3 to 30 s: trim, split or remove it"
    )
    assert cells[1][1] == "audio file './data/nope.wav' is missing from the zip: add it or fix the path"
    assert cells[2][1].startswith("invalid JSON (")
    assert "3 problem(s)" in result.stdout


def test_check_of_a_good_zip_reports_its_clips_and_minutes(tmp_path, dataset_zip, clips):
    result = vft("dataset", "check", dataset_zip, "--speaker-name", "Hero1")
    seconds = sum(c.seconds for c in clips)
    assert result.returncode == 0, result.stdout
    assert result.stdout.strip() == (
        f"OK {dataset_zip}: {len(clips)} clips, {seconds / 60:.2f} minutes of audio ({seconds:.1f} s)"
    )


def test_check_refuses_the_speaker_name_the_server_refuses(dataset_zip):
    result = vft("dataset", "check", dataset_zip, "--speaker-name", "Hero_1")
    assert result.returncode == 1
    assert "speaker_name must not contain an underscore followed by a number" in result.stdout


def ljspeech_folder(folder: Path, clips: list[Clip]) -> Path:
    """The clips as stereo WAVs at their own rate in wavs/, and a metadata.csv whose third column (the normalized
    text) is the clip's transcript."""
    (folder / "wavs").mkdir(parents=True)
    rows = []
    for i, clip in enumerate(clips, start=1):
        soundfile.write(
            folder / "wavs" / f"LJ{i:03d}.wav", np.stack([clip.waveform] * 2, axis=1), clip.sample_rate
        )
        rows.append(f"LJ{i:03d}|RAW {i}|{clip.text}")
    (folder / "metadata.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


class Events:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def emit(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def close(self) -> None:
        pass


def test_make_builds_a_24_khz_zip_that_passes_check_and_trains(tmp_path, clips, ref_clip, trainer_env):
    assert clips[0].sample_rate != SAMPLE_RATE  # the conversion is exercised
    folder = ljspeech_folder(tmp_path / "voice", clips)
    soundfile.write(folder / "ref_audio.wav", ref_clip.waveform, ref_clip.sample_rate)
    made = vft("dataset", "make", folder, "-o", tmp_path / "voice.zip")
    assert made.returncode == 0, made.stdout + made.stderr
    with zipfile.ZipFile(tmp_path / "voice.zip") as archive:
        lines = [json.loads(line) for line in archive.read("train.jsonl").decode().splitlines()]
        assert [line["text"] for line in lines] == [clip.text for clip in clips]
        assert {line["ref_audio"] for line in lines} == {"./data/ref_audio.wav"}
        for line, clip in zip(lines, clips, strict=True):
            info = soundfile.info(io.BytesIO(archive.read(line["audio"][2:])))
            assert (info.samplerate, info.channels) == (SAMPLE_RATE, 1)
            assert abs(info.frames / info.samplerate - clip.seconds) < 0.01
    checked = vft("dataset", "check", tmp_path / "voice.zip")
    assert checked.returncode == 0 and checked.stdout.startswith("OK "), checked.stdout

    settings = replace(Settings.from_env(trainer_env), s3_access_key=None, s3_secret_key=None)
    request = TrainRequest(
        job_id="made-zip",
        dataset=str(tmp_path / "voice.zip"),
        speaker_name="Made1",
        num_epochs=1,
        batch_size=2,
        lr=1e-3,
    )
    last = run_training(request, settings=settings, reporter=Events())
    assert last["stage"] == "done", last


def test_make_names_every_missing_clip_and_writes_nothing(tmp_path, clips):
    folder = ljspeech_folder(tmp_path / "voice", clips[:3])
    (folder / "wavs" / "LJ002.wav").unlink()
    with open(folder / "metadata.csv", "a", encoding="utf-8") as handle:
        handle.write("LJ009|Never recorded.\n")
    made = vft("dataset", "make", folder)
    assert made.returncode == 1
    assert (
        "metadata.csv line 2" in made.stdout and f"{folder / 'wavs' / 'LJ002.wav'} is missing" in made.stdout
    )
    assert "metadata.csv line 4" in made.stdout and "LJ009.wav is missing" in made.stdout
    assert not (tmp_path / "voice.zip").exists()


def test_sample_writes_a_folder_that_make_turns_into_a_valid_zip(tmp_path):
    sampled = vft("dataset", "sample", tmp_path / "sample", "--clips", "3")
    assert sampled.returncode == 0, sampled.stderr
    rows = (tmp_path / "sample" / "metadata.csv").read_text(encoding="utf-8").splitlines()
    assert [row.split("|")[0] for row in rows] == ["sample_01", "sample_02", "sample_03"]
    made = vft("dataset", "make", tmp_path / "sample")
    assert made.returncode == 0, made.stdout
    assert made.stdout.splitlines()[-1].startswith(f"OK {tmp_path / 'sample.zip'}: 3 clips")


def test_make_from_a_train_jsonl_folder_keeps_each_lines_reference_and_language(tmp_path, clips, ref_clip):
    folder = tmp_path / "export"
    (folder / "audio").mkdir(parents=True)
    for i, clip in enumerate(clips[:3], start=1):
        soundfile.write(folder / "audio" / f"c{i}.wav", clip.waveform, clip.sample_rate)
    soundfile.write(folder / "ref.wav", ref_clip.waveform, ref_clip.sample_rate)
    lines = [
        {"audio": "audio/c1.wav", "text": clips[0].text, "ref_audio": "ref.wav"},
        {"audio": "audio/c2.wav", "text": clips[1].text, "ref_audio": "audio/c1.wav", "language": "German"},
        {"audio": "audio/c3.wav", "text": clips[2].text},
    ]
    (folder / "train.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n", encoding="utf-8")
    made = vft("dataset", "make", folder, "--ref", folder / "ref.wav")
    assert made.returncode == 0, made.stdout
    with zipfile.ZipFile(tmp_path / "export.zip") as archive:
        written = [json.loads(line) for line in archive.read("train.jsonl").decode().splitlines()]
        names = sorted(archive.namelist())
    assert written == [
        {"audio": "./data/seg_00000001.wav", "text": clips[0].text, "ref_audio": "./data/ref_audio.wav"},
        {
            "audio": "./data/seg_00000002.wav",
            "text": clips[1].text,
            "ref_audio": "./data/seg_00000001.wav",
            "language": "German",
        },
        {"audio": "./data/seg_00000003.wav", "text": clips[2].text, "ref_audio": "./data/ref_audio.wav"},
    ]
    assert names == [
        "data/ref_audio.wav",
        "data/seg_00000001.wav",
        "data/seg_00000002.wav",
        "data/seg_00000003.wav",
        "train.jsonl",
    ]
