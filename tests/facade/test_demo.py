"""`vft demo` end to end (its own S3 server and `vft serve`), reusing the session's tiny models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile

from voicefinetune.schemas import SAMPLE_RATE


@pytest.mark.timeout(400)
def test_demo_exits_0_and_leaves_playable_24khz_wavs(tmp_path: Path, tiny_models) -> None:
    out = tmp_path / "demo-output"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "voicefinetune.cli",
            "demo",
            "--output-dir",
            str(out),
            "--epochs",
            "1",
            "--models-dir",
            str(tiny_models.root),
        ],
        capture_output=True,
        text=True,
        timeout=360,
        cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"},
    )
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert str(out) in result.stdout
    for expected in ("Voice design: http", "POST /finetune", "Audio: http", "Avg inference time", "Done in"):
        assert expected in result.stdout
    wavs = sorted(out.rglob("*.wav"))
    assert {p.parent.name for p in wavs} == {"voice_design", "fine_tuned", "chapter"}
    assert len(list((out / "fine_tuned").glob("*.wav"))) == 3
    # the two-voice chapter: its manifest names each item's voice in turn, its subtitles one cue per segment
    manifest = json.loads((out / "chapter" / "ch01.manifest.json").read_text())
    voices = [segment["voice"] for segment in manifest["segments"]]
    assert (
        len(voices) == 4
        and voices[0] == voices[2]
        and voices[1] == voices[3] == "design:a young man, warm and quick"
    )
    assert (out / "chapter" / "ch01.vtt").read_text().count(" --> ") == 4
    for wav in wavs:
        info = soundfile.info(str(wav))
        assert info.samplerate == SAMPLE_RATE and info.frames > 0, wav
    assert (out / "voice_dataset.zip").is_file()
