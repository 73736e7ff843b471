"""Dataset intake in-process: safe extraction, line-by-line checks reported at once, 24 kHz mono output."""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile

from voicefinetune.dataset import (
    DatasetError,
    DatasetLimits,
    load_audio,
    manifest_folder,
    open_dataset,
    validate_dataset,
)
from voicefinetune.devtools.sample_data import (
    Clip,
    manifest_lines,
    reference_clip,
    speech_clips,
    write_bad_dataset_zip,
    write_dataset_zip,
)
from voicefinetune.schemas import SAMPLE_RATE
from voicefinetune.zipsafe import ZipLimits


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _wav(seconds: float, rate: int = SAMPLE_RATE, channels: int = 1) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * 220 * t)
    data = np.stack([wave] * channels, axis=1) if channels > 1 else wave
    buffer = io.BytesIO()
    soundfile.write(buffer, data, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _line(audio: str, text: str = "Hello there.", ref: str = "./data/ref.wav") -> str:
    return json.dumps({"audio": audio, "text": text, "ref_audio": ref})


def files_under(root: Path) -> set[Path]:
    return set(root.rglob("*"))


def test_bad_dataset_is_refused_with_a_clear_message_and_nothing_left(bad_dataset, tmp_path):
    before = files_under(tmp_path)
    dest = tmp_path / "job" / "dataset"
    with pytest.raises(DatasetError) as caught:
        open_dataset(bad_dataset.path, dest)
    for fragment in bad_dataset.fragments:
        assert fragment in str(caught.value), str(caught.value)
    assert not dest.exists()
    assert files_under(tmp_path) - before <= {tmp_path / "job"}
    assert not Path("/etc/x").exists()


def test_archive_checks_happen_before_anything_is_written(tmp_path, clips, ref_clip):
    for kind in ("no-train-jsonl", "parent-member", "absolute-member", "symlink-member", "zip-bomb"):
        archive = write_bad_dataset_zip(kind, tmp_path / f"{kind}.zip", clips=clips, ref=ref_clip)
        with pytest.raises(DatasetError):
            open_dataset(archive, tmp_path / kind / "dataset")
        assert not (tmp_path / kind).exists(), kind


def test_dataset_maker_layout_gives_24khz_mono_clips(tmp_path, clips, ref_clip):
    archive = write_dataset_zip(tmp_path / "ds.zip", clips, ref=ref_clip)
    dataset = open_dataset(archive, tmp_path / "dataset")
    assert [e.line for e in dataset.entries] == [1, 2, 3, 4]
    loaded = dataset.load()
    assert [c.text for c in loaded] == [c.text for c in clips]
    for clip, source in zip(loaded, clips, strict=True):
        assert clip.audio.dtype == np.float32 and clip.audio.ndim == 1
        assert abs(len(clip.audio) / SAMPLE_RATE - source.seconds) < 0.01
        assert np.abs(clip.audio).max() > 0.01
    assert loaded[0].ref_audio is loaded[1].ref_audio  # one shared reference decoded once


def test_stereo_44k_audio_is_resampled_to_24k_mono(tmp_path):
    lines = [_line("./data/a.wav"), _line("data/b.wav")]
    archive = _zip(
        tmp_path / "ds.zip",
        {
            "train.jsonl": "\n".join(lines).encode(),
            "data/a.wav": _wav(1.0, 44100, channels=2),
            "data/b.wav": _wav(0.5, 16000),
            "data/ref.wav": _wav(2.0, 48000),
        },
    )
    clips = open_dataset(archive, tmp_path / "dataset").load()
    assert [len(c.audio) for c in clips] == [24000, 12000]
    assert len(clips[0].ref_audio) == 48000


def _wav_frames(frames: int, rate: int) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, 0.3 * np.sin(np.arange(frames) / 7.0), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("rate", "frames", "at_24k"),
    # 24 kHz / rate * frames, rounded half up: 12001.5 -> 12002, 12000.5 -> 12001; 44100 and 24000 have no halves
    [
        (16000, 8001, 12002),
        (48000, 24001, 12001),
        (16000, 8000, 12000),
        (44100, 44101, 24001),
        (24000, 12345, 12345),
    ],
)
def test_the_sample_count_read_from_the_header_is_the_decoded_length(tmp_path, rate, frames, at_24k):
    archive = _zip(
        tmp_path / "ds.zip",
        {
            "train.jsonl": _line("./data/a.wav").encode(),
            "data/a.wav": _wav_frames(frames, rate),
            "data/ref.wav": _wav(2.0),
        },
    )
    dataset = open_dataset(archive, tmp_path / "dataset")
    [entry] = dataset.entries
    assert len(load_audio(entry.audio)) == at_24k  # what the decoder (soxr) really gives
    assert entry.samples == at_24k
    assert [clip.audio.samples for clip in dataset.clips()] == [at_24k]


def test_train_jsonl_line_limit_at_its_boundary(tmp_path):
    lines = "\n".join([_line("./data/a.wav")] * 3)
    archive = _zip(
        tmp_path / "ds.zip",
        {"train.jsonl": lines.encode(), "data/a.wav": _wav(1.0), "data/ref.wav": _wav(2.0)},
    )
    assert len(open_dataset(archive, tmp_path / "ok", DatasetLimits(max_lines=3)).entries) == 3
    with pytest.raises(DatasetError) as caught:
        open_dataset(archive, tmp_path / "over", DatasetLimits(max_lines=2))
    assert str(caught.value) == "train.jsonl has 3 lines; the limit is 2: split the dataset"
    assert not (tmp_path / "over").exists()


def test_train_jsonl_of_100001_lines_is_refused_before_any_line_is_read(tmp_path):
    archive = _zip(tmp_path / "ds.zip", {"train.jsonl": b"{}\n" * 100_001})
    with pytest.raises(DatasetError) as caught:
        open_dataset(archive, tmp_path / "dataset")
    assert str(caught.value) == "train.jsonl has 100001 lines; the limit is 100000: split the dataset"
    assert caught.value.problems == [str(caught.value)]


def test_a_one_character_path_is_a_file_name_and_a_drive_letter_is_absolute(tmp_path):
    archive = _zip(
        tmp_path / "ds.zip",
        {
            "train.jsonl": "\n".join([_line("a", ref="r"), _line("C:x.wav", ref="r")]).encode(),
            "a": _wav(1.0),
            "r": _wav(2.0),
        },
    )
    with pytest.raises(DatasetError) as caught:
        open_dataset(archive, tmp_path / "dataset")
    assert caught.value.problems == [
        "line 2: audio path 'C:x.wav' is absolute: use a path inside the zip such as ./data/x.wav"
    ]


def test_past_200_problems_the_message_counts_the_rest(tmp_path):
    one = _zip(tmp_path / "one.zip", {"train.jsonl": b"[1]\n"})
    with pytest.raises(DatasetError) as caught:
        open_dataset(one, tmp_path / "d1")
    assert (
        str(caught.value)
        == "train.jsonl has 1 bad line(s): line 1: expected a JSON object with audio, text and ref_audio"
    )
    many = _zip(tmp_path / "many.zip", {"train.jsonl": b"[1]\n" * 205})
    with pytest.raises(DatasetError) as caught:
        open_dataset(many, tmp_path / "d2")
    shown = "; ".join(
        f"line {n}: expected a JSON object with audio, text and ref_audio" for n in range(1, 201)
    )
    assert str(caught.value) == f"train.jsonl has 205 bad line(s): {shown}; and 5 more"
    assert len(caught.value.problems) == 205


def test_dataset_zipped_with_its_folder_is_accepted(tmp_path, clips, ref_clip):
    archive = write_dataset_zip(tmp_path / "ds.zip", clips, ref=ref_clip, top_folder="Hero1")
    with zipfile.ZipFile(archive, "a") as extra:
        extra.writestr("__MACOSX/Hero1/._train.jsonl", b"\x00\x05")
    dataset = open_dataset(archive, tmp_path / "dataset")
    assert dataset.root == (tmp_path / "dataset" / "Hero1").resolve()
    assert len(dataset.entries) == 4


def test_the_dataset_check_reports_a_good_zip_and_leaves_nothing_behind(tmp_path, clips, ref_clip):
    archive = write_dataset_zip(tmp_path / "ds.zip", clips, ref=ref_clip)
    work = tmp_path / "work"

    report = validate_dataset(archive, work, speaker_name="hero_voice")

    assert (report.problems, report.clips, report.message) == ([], len(clips), "")
    assert report.seconds == pytest.approx(sum(clip.seconds for clip in clips), abs=0.01)
    assert list(work.iterdir()) == []  # the extraction was temporary


def test_the_dataset_check_names_a_bad_speaker_name_beside_a_good_zip(tmp_path, clips, ref_clip):
    archive = write_dataset_zip(tmp_path / "ds.zip", clips, ref=ref_clip)

    report = validate_dataset(archive, tmp_path / "work", speaker_name="9lives")

    [problem] = report.problems
    assert problem.startswith("speaker_name must start with a letter") and report.message == problem
    assert report.clips == len(clips)


def test_manifest_folder_rules():
    assert manifest_folder([Path("train.jsonl"), Path("data/a.wav")]).as_posix() == "."
    assert manifest_folder([Path("x/train.jsonl"), Path("x/data/a.wav")]).as_posix() == "x"
    assert manifest_folder([Path("a/b/train.jsonl"), Path("a/b/data/a.wav")]).as_posix() == "a/b"
    assert manifest_folder([Path(".DS_Store"), Path("x/train.jsonl"), Path("x/data/a.wav")]).as_posix() == "x"
    assert manifest_folder([Path("train.jsonl"), Path("old/train.jsonl")]).as_posix() == "."
    with pytest.raises(DatasetError, match="several train.jsonl"):
        manifest_folder([Path("x/train.jsonl"), Path("y/train.jsonl")])
    with pytest.raises(DatasetError, match="missing train.jsonl"):
        manifest_folder([Path("x/data/a.wav"), Path("__MACOSX/x/train.jsonl")])


def _export(folder: str, audio_prefix: str, separator: str = "/") -> dict[str, bytes]:
    """A dataset-maker style export zipped with its folder; audio paths start with `audio_prefix`."""
    lines = [_line(f"{audio_prefix}data/a{i}.wav", ref=f"{audio_prefix}data/ref_audio.wav") for i in range(2)]
    members = {"train.jsonl": "\n".join(lines).encode(), "data/ref_audio.wav": _wav(2.0)}
    members |= {f"data/a{i}.wav": _wav(1.0) for i in range(2)}
    return {separator.join([folder, *name.split("/")]): data for name, data in members.items()}


@pytest.mark.parametrize("prefix", ["./", "", "Hero_qwen3_tts_dataset/", ".\\"])
def test_export_paths_from_train_jsonl_or_from_the_zip_top_are_accepted(tmp_path, prefix):
    archive = _zip(tmp_path / "ds.zip", _export("Hero_qwen3_tts_dataset", prefix))
    dataset = open_dataset(archive, tmp_path / "dataset")
    assert [e.audio.name for e in dataset.entries] == ["a0.wav", "a1.wav"]
    assert all(e.ref_audio.name == "ref_audio.wav" for e in dataset.entries)


def test_zip_written_with_windows_separators_is_accepted(tmp_path):
    members = _export("Hero", "./", separator="\\")
    archive = _zip(tmp_path / "ds.zip", {"Hero\\": b"", "Hero\\data\\": b"", **members})
    dataset = open_dataset(archive, tmp_path / "dataset")
    assert dataset.root == (tmp_path / "dataset" / "Hero").resolve()
    assert len(dataset.entries) == 2


def test_a_line_leaving_the_dataset_folder_is_outside_even_inside_the_zip(tmp_path):
    members = _export("Hero", "./")
    members["Hero/train.jsonl"] += ("\n" + _line("../x.wav", ref="./data/ref_audio.wav")).encode()
    archive = _zip(tmp_path / "ds.zip", {**members, "x.wav": _wav(1.0)})
    with pytest.raises(DatasetError, match=r"line 3: audio path '\.\./x.wav' points outside the archive"):
        open_dataset(archive, tmp_path / "dataset")


def test_every_bad_line_is_reported_at_once(tmp_path):
    lines = [
        _line("./data/a.wav"),
        "{not json",
        _line("./data/a.wav", text="   "),
        json.dumps({"text": "no audio", "ref_audio": "./data/ref.wav"}),
        json.dumps({"audio": "./data/a.wav", "text": "no ref"}),
        _line("../outside.wav"),
        _line("/abs/a.wav"),
        _line("./data/short.wav"),
        "",
        "[1, 2]",
        _line("./data/a.wav", ref="./data/nope.wav"),
    ]
    archive = _zip(
        tmp_path / "ds.zip",
        {
            "train.jsonl": "\n".join(lines).encode(),
            "data/a.wav": _wav(1.0),
            "data/short.wav": _wav(0.1),
            "data/ref.wav": _wav(2.0),
        },
    )
    with pytest.raises(DatasetError) as caught:
        open_dataset(archive, tmp_path / "dataset")
    message = str(caught.value)
    expected = {
        2: "invalid JSON",
        3: "'text' is empty",
        4: "'audio' is missing",
        5: "'ref_audio' is missing",
        6: "outside the archive",
        7: "absolute",
        8: "lasts 0.10 s",
        10: "expected a JSON object",
        11: "'./data/nope.wav' is missing",
    }
    assert "train.jsonl has 9 bad line(s)" in message
    for number, fragment in expected.items():
        assert any(p.startswith(f"line {number}:") and fragment in p for p in caught.value.problems), (
            number,
            message,
        )
    assert "line 1:" not in message and "line 9:" not in message
    assert not (tmp_path / "dataset").exists()


def test_duration_bounds_follow_the_limits(tmp_path):
    archive = _zip(
        tmp_path / "ds.zip",
        {
            "train.jsonl": _line("./data/a.wav").encode(),
            "data/a.wav": _wav(3.0),
            "data/ref.wav": _wav(2.0),
        },
    )
    assert open_dataset(archive, tmp_path / "ok")
    with pytest.raises(
        DatasetError, match=r"line 1: audio './data/a.wav' lasts 3.00 s; clips must last 0.3 to 2 s"
    ):
        open_dataset(archive, tmp_path / "bad", DatasetLimits(max_seconds=2.0))


def test_empty_manifest_and_non_utf8_manifest(tmp_path):
    with pytest.raises(DatasetError, match="no clips"):
        open_dataset(_zip(tmp_path / "a.zip", {"train.jsonl": b"\n\n"}), tmp_path / "a")
    with pytest.raises(DatasetError, match="not UTF-8"):
        open_dataset(_zip(tmp_path / "b.zip", {"train.jsonl": b"\xff\xfe\xfa"}), tmp_path / "b")


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("..\\x.wav", "outside"),
        ("C:/x.wav", "absolute"),
        ("C:\\x.wav", "absolute"),
        ("\\etc\\x", "absolute"),
        ("data/../../x.wav", "outside"),
        ("a\x01b", "control"),
    ],
)
def test_unsafe_member_names(tmp_path, name, fragment):
    archive = _zip(tmp_path / "ds.zip", {"train.jsonl": b"", name: b"x"})
    with pytest.raises(DatasetError, match=fragment):
        open_dataset(archive, tmp_path / "dataset")
    assert not (tmp_path / "dataset").exists()


def test_member_count_total_size_and_ratio_caps(tmp_path):
    members = {"train.jsonl": b"", **{f"data/{i}.wav": b"x" for i in range(5)}}
    archive = _zip(tmp_path / "many.zip", members)
    with pytest.raises(DatasetError, match="6 members; the limit is 4"):
        open_dataset(archive, tmp_path / "d1", DatasetLimits(zip=ZipLimits(max_members=4)))
    big = _zip(tmp_path / "big.zip", {"train.jsonl": b"", "data/a.wav": np.random.bytes(3000)})
    with pytest.raises(DatasetError, match="expands to 3000 bytes; the limit is 2000"):
        open_dataset(big, tmp_path / "d2", DatasetLimits(zip=ZipLimits(max_total_bytes=2000)))
    dense = _zip(tmp_path / "dense.zip", {"train.jsonl": b"", "data/a.wav": bytes(2 * 1024 * 1024)})
    with pytest.raises(DatasetError, match="zip bomb"):
        open_dataset(dense, tmp_path / "d3")
    assert not any((tmp_path / d).exists() for d in ("d1", "d2", "d3"))


def _lie_about_size(path: Path, member: str, declared: int) -> None:
    """Rewrite the uncompressed size a member declares (local header and central directory)."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    struct.pack_into("<I", data, info.header_offset + 22, declared)  # local header: uncompressed size
    central = data.find(b"PK\x01\x02")
    while central >= 0:
        name_length = struct.unpack_from("<H", data, central + 28)[0]
        if data[central + 46 : central + 46 + name_length] == member.encode():
            struct.pack_into("<I", data, central + 24, declared)  # central directory: uncompressed size
            break
        central = data.find(b"PK\x01\x02", central + 4)
    path.write_bytes(bytes(data))


def test_member_bigger_than_it_declares_stops_extraction(tmp_path, clips, ref_clip):
    archive = write_dataset_zip(tmp_path / "ds.zip", clips, ref=ref_clip)
    _lie_about_size(archive, "data/seg_00000001.wav", 100)
    with zipfile.ZipFile(archive) as check:
        assert check.getinfo("data/seg_00000001.wav").file_size == 100
    with pytest.raises(DatasetError, match="damaged"):
        open_dataset(archive, tmp_path / "dataset")
    assert not (tmp_path / "dataset").exists()


def test_symlink_and_duplicate_members(tmp_path):
    duplicate = tmp_path / "dup.zip"
    with zipfile.ZipFile(duplicate, "w") as archive, pytest.warns(UserWarning, match="Duplicate name"):
        archive.writestr("train.jsonl", b"")
        archive.writestr("data/a.wav", b"1")
        archive.writestr("data/a.wav", b"2")
    with pytest.raises(DatasetError, match="appears twice"):
        open_dataset(duplicate, tmp_path / "d1")
    not_zip = tmp_path / "plain.zip"
    not_zip.write_text("hello")
    with pytest.raises(DatasetError, match="not a readable zip"):
        open_dataset(not_zip, tmp_path / "d2")


def test_manifest_lines_match_the_dataset_maker_layout():
    clip = Clip("Hi.", np.zeros(24000, dtype=np.float32), 24000)
    assert json.loads(manifest_lines([clip])[0]) == {
        "audio": "./data/seg_00000001.wav",
        "text": "Hi.",
        "ref_audio": "./data/ref_audio.wav",
    }


def test_tone_clips_make_a_valid_dataset_without_espeak(tmp_path):
    tone_clips = speech_clips(3, seed=5, use_espeak=False)
    assert len({c.text for c in tone_clips}) == 3 and all(0.5 < c.seconds < 10 for c in tone_clips)
    archive = write_dataset_zip(tmp_path / "ds.zip", tone_clips, ref=reference_clip(5, use_espeak=False))
    assert len(open_dataset(archive, tmp_path / "dataset").load()) == 3


def test_a_line_may_give_its_clip_language(tmp_path):
    lines = [
        json.dumps(
            {"audio": "./data/a.wav", "text": "Hallo.", "ref_audio": "./data/ref.wav", "language": "german"}
        ),
        _line("./data/a.wav"),
    ]
    members = {"data/a.wav": _wav(1.0), "data/ref.wav": _wav(2.0)}
    archive = _zip(tmp_path / "ds.zip", {"train.jsonl": "\n".join(lines).encode(), **members})
    dataset = open_dataset(archive, tmp_path / "dataset")
    assert [entry.language for entry in dataset.entries] == ["German", None]
    assert [clip.language for clip in dataset.load()] == ["German", None]

    lines[1] = json.dumps(
        {"audio": "./data/a.wav", "text": "Hi.", "ref_audio": "./data/ref.wav", "language": "Klingon"}
    )
    archive = _zip(tmp_path / "bad.zip", {"train.jsonl": "\n".join(lines).encode(), **members})
    with pytest.raises(DatasetError) as caught:
        open_dataset(archive, tmp_path / "bad")
    assert any(p.startswith("line 2: 'language'") and "Klingon" in p for p in caught.value.problems)


def test_the_extraction_uses_the_datasets_own_zip_limits(tmp_path):
    # 2 MiB of zeros compresses about 1000x: over the default 200x, within this dataset's 5000x.
    archive = _zip(
        tmp_path / "ds.zip",
        {
            "train.jsonl": _line("./data/a.wav").encode(),
            "data/a.wav": _wav(1.0),
            "data/ref.wav": _wav(2.0),
            "data/notes.bin": bytes(2 * 1024 * 1024),
        },
    )
    limits = DatasetLimits(zip=ZipLimits(max_ratio=5000.0))
    dataset = open_dataset(archive, tmp_path / "ok", limits)
    assert len(dataset.entries) == 1
    assert (tmp_path / "ok" / "data" / "notes.bin").stat().st_size == 2 * 1024 * 1024
