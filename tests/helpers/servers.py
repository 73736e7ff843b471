"""A real `vft serve` or `vft inference` subprocess (tiny models, moto S3 over HTTP) and helpers to drive it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

from voicefinetune.settings import Settings

SERVER_START_TIMEOUT = 90.0
TERMINAL = ("ready", "failed")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """One `vft serve` (or `vft inference`, ``command``) process; ``restart`` keeps its data dir and port."""

    env: dict[str, str]
    port: int
    log_path: Path
    process: subprocess.Popen | None = None
    command: str = "serve"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self.env)

    def start(self) -> Server:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "voicefinetune.cli",
                self.command,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"vft {self.command} exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                if httpx.get(self.url + "/", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(
            f"vft {self.command} did not answer in {SERVER_START_TIMEOUT}s:\n{self.log_tail()}"
        )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(30)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    def restart(self) -> Server:
        self.stop()
        return self.start()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def client(self, timeout: float = 60.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def wait_for(
        self,
        object_id: str,
        statuses: tuple[str, ...] = TERMINAL,
        timeout: float = 120.0,
        *,
        collection: str = "jobs",
    ) -> dict:
        """GET /{collection}/{object_id} (a job, a synthesis...) until its status is one of ``statuses``: its body."""
        deadline = time.monotonic() + timeout
        body: dict = {}
        while time.monotonic() < deadline:
            response = httpx.get(f"{self.url}/{collection}/{object_id}", timeout=10)
            if response.status_code == 200:
                body = response.json()
                if body["status"] in statuses:
                    return body
            time.sleep(0.1)
        raise AssertionError(
            f"{collection}/{object_id} not in {statuses} after {timeout} s: {body}\n{self.log_tail()}"
        )


def server_environment(data_dir: Path, *, s3_endpoint: str, bucket: str, tiny_root: Path) -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "E2E_ACCESS_KEY": "testing",
        "E2E_SECRET_KEY": "testing",
        "E2E_BUCKET": bucket,
        "E2E_ENDPOINT_URL": s3_endpoint,
        "DEVICE": "cpu",
        "USE_FLASH_ATTN": "0",
        "VFT_DATA_DIR": str(data_dir),
        "VFT_TINY_MODELS": "1",
        "VFT_TINY_MODELS_DIR": str(tiny_root),
        "VFT_S3_MAX_ATTEMPTS": "2",
    }


def train_voice(server: Server, dataset_zip: Path, speaker: str) -> str:
    """POST /finetune (one epoch) and wait for the voice to be ready; its id."""
    with server.client() as http:
        r = http.post(
            "/finetune",
            files={"dataset": dataset_zip.read_bytes()},
            data={"speaker_name": speaker, "num_epochs": "1"},
        )
    assert r.status_code == 202, r.text
    job = server.wait_for(r.json()["job_id"], timeout=300)
    assert job["status"] == "ready", f"{job}\n{server.log_tail()}"
    return job["job_id"]


class ServerThread:
    """A uvicorn server on 127.0.0.1 in a thread of its own."""

    def __init__(self, app):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
