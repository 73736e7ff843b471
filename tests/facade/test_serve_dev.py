"""`vft serve --dev` as a newcomer runs it (no S3, no models, no settings): it prints where the API and its docs are
and curls that work as printed; `vft models download` explains itself and fails clearly without network."""

from __future__ import annotations

import os
import queue
import re
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import soundfile

from tests.helpers.servers import free_port

START_SECONDS = 50.0


def vft_command() -> list[str]:
    script = Path(sys.executable).with_name("vft")
    return [str(script)] if script.exists() else [sys.executable, "-m", "voicefinetune.cli"]


def clean_environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("E2E_", "VFT_"))}
    return {**env, **extra}


def lines_of(process: subprocess.Popen) -> queue.Queue:
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in process.stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    return lines


def wait_for_health(url: str) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.25)
    raise AssertionError(f"{url} did not answer within {START_SECONDS} s")


def test_serve_dev_prints_the_api_the_docs_and_curls_that_work(tmp_path, tiny_models):
    port = free_port()
    process = subprocess.Popen(
        [*vft_command(), "serve", "--dev", "--port", str(port), "--log-level", "warning"],
        env=clean_environment(VFT_TINY_MODELS_DIR=str(tiny_models.root)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = lines_of(process)
        seen: list[str] = []
        while not any(line.startswith("  Try:") for line in seen):
            seen.append(lines.get(timeout=START_SECONDS))
        seen.append(lines.get(timeout=START_SECONDS))  # the second curl
        url = f"http://127.0.0.1:{port}"
        assert f"  API:   {url}" in seen and f"  Docs:  {url}/docs" in seen, seen
        data_dir = Path(re.search(r"data in (\S+)$", next(s for s in seen if "data in" in s)).group(1))
        curls = [
            line.split(":", 1)[1].strip() if line.startswith("  Try:") else line.strip() for line in seen[-2:]
        ]
        assert curls[0] == f"curl -s {url}/"
        wait_for_health(url)
        health = subprocess.run(shlex.split(curls[0]), capture_output=True, text=True, timeout=30)
        assert health.stdout == '{"service":"qwen3-tts-finetune-api","status":"ok","storage_configured":true}'
        design = subprocess.run(shlex.split(curls[1]), cwd=tmp_path, capture_output=True, timeout=120)
        assert design.returncode == 0, design.stderr
        info = soundfile.info(str(tmp_path / "hello.wav"))
        assert (info.samplerate, info.channels) == (24000, 1) and info.frames > 0
        assert httpx.get(url + "/docs").status_code == 200
        assert data_dir.is_dir()
    finally:
        process.terminate()
        process.wait(30)
    assert not data_dir.exists()  # the temporary data folder goes with the server


def test_serve_dev_refuses_the_kubernetes_backend():
    result = subprocess.run(
        [*vft_command(), "serve", "--dev", "--backend", "kubernetes"],
        capture_output=True,
        text=True,
        timeout=30,
        env=clean_environment(),
    )
    assert result.returncode == 2 and "--dev runs the local backend" in result.stderr


def test_models_download_help_names_its_options():
    result = subprocess.run(
        [*vft_command(), "models", "download", "--help"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0
    assert "--dir DIR" in result.stdout and "--dry-run" in result.stdout


def test_models_download_without_network_says_what_to_do_instead(tmp_path):
    env = clean_environment(
        HF_HUB_OFFLINE="0", HF_ENDPOINT=f"http://127.0.0.1:{free_port()}"
    )  # nothing listens
    result = subprocess.run(
        [*vft_command(), "models", "download", "--dir", str(tmp_path / "models")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    first, second = result.stdout.splitlines()[:2]
    assert first.startswith("vft models download: cannot reach the Hugging Face hub (")
    assert second == (
        "Without internet access here, download them on a machine with internet access (`vft models download "
        "--dir DIR`), copy DIR here and set VFT_BASE_MODEL=DIR/Qwen3-TTS-12Hz-1.7B-Base and "
        "VFT_VOICE_DESIGN_MODEL=DIR/Qwen3-TTS-12Hz-1.7B-VoiceDesign."
    )
    assert not (tmp_path / "models").exists()
