"""`vft demo --api-key`: the whole flow against a `vft serve` that requires the key (the other mode: test_demo.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.timeout(400)
def test_demo_runs_against_a_server_that_requires_an_api_key(tmp_path: Path, tiny_models) -> None:
    out = tmp_path / "demo-output"
    environ = {key: value for key, value in os.environ.items() if key != "VFT_API_KEY"}
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
            "--api-key",
            "demo-key",
        ],
        capture_output=True,
        text=True,
        timeout=360,
        cwd=tmp_path,
        env={**environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"},
    )
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert "API key: on" in result.stdout and "Done in" in result.stdout
    assert (
        len(list((out / "fine_tuned").glob("*.wav"))) == 3
    )  # every call passed the key (a 401 ends the demo)
