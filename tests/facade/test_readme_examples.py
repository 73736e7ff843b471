"""The README's runnable examples (fenced ```bash runnable and ```python runnable blocks), run in order as a
newcomer would, against `vft serve --dev` on tiny models: they must all work and leave what they promise."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import soundfile

from tests.helpers.servers import free_port

README = Path(__file__).resolve().parents[2] / "README.md"
RUNNABLE = re.compile(r"^```(bash|python) runnable\n(.*?)^```$", re.MULTILINE | re.DOTALL)
START_SECONDS = 120.0
RUN_SECONDS = 420


def runnable_blocks(text: str) -> list[tuple[str, str]]:
    return [(language, body) for language, body in RUNNABLE.findall(text)]


def script_of(blocks: list[tuple[str, str]], folder: Path) -> str:
    """One bash script: the bash blocks as they are, each python block run from a file at its place; every
    variable exported (set -a), as in one terminal where the reader ran them all."""
    lines = ["set -euo pipefail", "set -a"]
    for number, (language, body) in enumerate(blocks, start=1):
        if language == "bash":
            lines.append(body)
        else:
            (folder / f"block_{number}.py").write_text(body, encoding="utf-8")
            lines.append(f"python3 block_{number}.py")
    return "\n".join(lines) + "\n"


def wait_for_health(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        assert process.poll() is None, "vft serve --dev exited"
        try:
            if httpx.get(url + "/", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.25)
    raise AssertionError(f"{url} did not answer within {START_SECONDS} s")


def test_the_readme_marks_its_examples_runnable():
    languages = [language for language, _ in runnable_blocks(README.read_text(encoding="utf-8"))]
    assert languages.count("bash") >= 4 and "python" in languages, languages


def test_the_readme_examples_run_against_serve_dev(tmp_path, tiny_models):
    blocks = runnable_blocks(README.read_text(encoding="utf-8"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    bin_dir = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("E2E_", "VFT_"))}
    env |= {
        "PATH": f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}",
        "VFT_TINY_MODELS_DIR": str(tiny_models.root),
    }
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 (closed below, after the server)
    server = subprocess.Popen(
        [str(Path(bin_dir) / "vft"), "serve", "--dev", "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_health(url, server)
        work = tmp_path / "reader"
        work.mkdir()
        (work / "readme.sh").write_text(script_of(blocks, work), encoding="utf-8")
        run = subprocess.run(
            ["bash", "readme.sh"],
            cwd=work,
            env={**env, "API": url},
            capture_output=True,
            text=True,
            timeout=RUN_SECONDS,
        )
        assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
        assert '"status":"ready"' in run.stdout, run.stdout[-3000:]
        assert (work / "my-voice.zip").is_file()
        for name in ("line.wav", "chapter.wav"):
            info = soundfile.info(str(work / name))
            assert (info.samplerate, info.channels) == (24000, 1) and info.frames > 0, name
        for name in ("stream.mp3", "story.mp3"):
            assert (work / name).read_bytes()[:3] in (b"ID3", b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"), name
    finally:
        server.terminate()
        server.wait(30)
        log.close()
