"""Test helpers for the Kubernetes area: the operator as a real `vft operator` process, the real `kubernetes` client
bound to an emulator, waiting, and playing a training pod by running the Job's own command here."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import kubernetes
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.servers import free_port

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "charts" / "voicefinetune" / "crds" / "voicefinetune.io_voicefinetunes.yaml"
VFT = "voicefinetune.io/v1alpha1/voicefinetunes"
JOBS = "batch/v1/jobs"
GROUP, VERSION, PLURAL = "voicefinetune.io", "v1alpha1", "voicefinetunes"
VFT_BIN = str(Path(sys.executable).parent / "vft")

T = TypeVar("T")


def wait_for(
    check: Callable[[], T], *, timeout: float = 60.0, interval: float = 0.05, what: str = "condition"
) -> T:
    """Poll ``check`` until it returns something truthy; that value, or AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(interval)


def api_client(url: str) -> kubernetes.client.ApiClient:
    """The real synchronous `kubernetes` client, pointed at ``url`` explicitly (it reads $KUBECONFIG at import)."""
    configuration = kubernetes.client.Configuration()
    configuration.host = url
    configuration.api_key = {"authorization": "kmock"}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    return kubernetes.client.ApiClient(configuration)


def voicefinetune(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "VoiceFinetune",
        "metadata": {"name": name},
        "spec": {"datasetS3Key": "datasets/Hero1/dataset.zip", "speakerName": "hero_voice", **spec},
    }


@dataclass
class OperatorProcess:
    """One `vft operator` process, cluster-wide, with its log in a file."""

    env: dict[str, str]
    log_path: Path
    args: tuple[str, ...] = ()
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def port(self) -> int:
        return int(self.env["VFT_OPERATOR_PORT"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OperatorProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            [VFT_BIN, "operator", "--verbose", *self.args], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        wait_for(self._ready, timeout=30, interval=0.1, what="the operator's HTTP endpoint")
        return self

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"vft operator exited with {self.process.returncode}:\n{self.log()[-3000:]}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def reconciled(self, handler: str) -> float:
        """How many times this operator's ``handler`` (create, resume, ...) has succeeded so far (its /metrics)."""
        for family in text_string_to_metric_families(httpx.get(f"{self.url}/metrics", timeout=10).text):
            for sample in family.samples:
                if sample.name == "vft_operator_reconcile_total" and sample.labels == {
                    "handler": handler,
                    "result": "success",
                }:
                    return sample.value
        return 0.0


class Process:
    """A `vft` server process (inference, serve) with its log in a file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, url: str):
        self.url = url
        self.log = log
        self.process = subprocess.Popen(args, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115

    def wait_healthy(self, timeout: float = 90) -> Process:
        def healthy() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.log.name} exited:\n{self.log.read_text()[-3000:]}")
            try:
                return httpx.get(f"{self.url}/", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout=timeout, interval=0.2, what=self.log.name)
        return self

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()


def operator_environment(
    kubeconfig: Path, inference_url: str, extra: dict[str, str] | None = None
) -> dict[str, str]:
    port = free_port()
    return {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "VFT_OPERATOR_NAMESPACE": "default",
        "VFT_OPERATOR_PORT": str(port),
        "VFT_PROGRESS_BASE_URL": f"http://127.0.0.1:{port}",
        "VFT_OPERATOR_SECRET_KEY": "test-secret-key",
        "VFT_PROGRESS_INTERVAL": "0.3",
        "VFT_REPAIR_INTERVAL": "0.5",
        "VFT_RESYNC_INTERVAL": "3",
        "VFT_INFERENCE_URL": inference_url,
        "VFT_LOAD_TIMEOUT": "120",
        **(extra or {}),
    }


def pod_command(
    job: dict[str, Any], overrides: dict[str, str], core: kubernetes.client.CoreV1Api | None = None
) -> tuple[list[str], dict[str, str]]:
    """The training container's command and environment, as a kubelet would run them: Secret references read
    through ``core`` where given, ``overrides`` standing in for the others and for what a pod has and this machine
    has not (S3 server, paths)."""
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}
    references = {item["name"]: item["valueFrom"] for item in container.get("env", []) if "valueFrom" in item}
    if core is not None:
        for name, source in references.items():
            ref = source.get("secretKeyRef")
            if ref and name not in overrides:
                secret = core.read_namespaced_secret(ref["name"], job["metadata"]["namespace"])
                env[name] = base64.b64decode(secret.data[ref["key"]]).decode()
    missing = set(references) - set(overrides) - set(env)
    assert not missing, f"the test must supply the Secret-backed variables {missing}"
    command = [VFT_BIN if part == "vft" else part for part in container["command"]] + container.get(
        "args", []
    )
    return command, {**os.environ, **env, **overrides}


def play_training_pod(
    job: dict[str, Any],
    s3: dict[str, str],
    *,
    tiny_models_root: Path,
    data_dir: Path,
    hf_home: Path,
    core: kubernetes.client.CoreV1Api | None = None,
) -> None:
    """Play the Job's training pod on this machine: its own command on the CPU with the tiny models, with ``s3`` and
    local folders standing in for what the Secret and the node would provide; it must succeed."""
    command, env = pod_command(
        job,
        {
            **s3,
            "DEVICE": "cpu",
            "USE_FLASH_ATTN": "0",
            "VFT_TINY_MODELS": "1",
            "VFT_TINY_MODELS_DIR": str(tiny_models_root),
            "VFT_DATA_DIR": str(data_dir),
            "HF_HOME": str(hf_home),
            "VFT_S3_MAX_ATTEMPTS": "2",
        },
        core,
    )
    trained = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert trained.returncode == 0, trained.stderr[-3000:]


def mark_job(
    batch: kubernetes.client.BatchV1Api,
    name: str,
    *,
    outcome: str,
    reason: str = "",
    message: str = "",
    namespace: str = "default",
) -> None:
    """Write a Job's status as the Job controller would at its end (``outcome``: Complete or Failed)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    counters = {"succeeded": 1} if outcome == "Complete" else {"failed": 2}
    condition = {"type": outcome, "status": "True", "lastTransitionTime": now}
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    batch.patch_namespaced_job_status(
        name,
        namespace,
        {
            "status": {
                "startTime": now,
                "completionTime": now,
                "active": 0,
                "conditions": [condition],
                **counters,
            }
        },
    )
