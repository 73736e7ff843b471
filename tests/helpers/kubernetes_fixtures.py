"""Kubernetes fixtures: a KMock cluster emulator over HTTP, a kubeconfig for it, the real clients, `vft` processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest

from tests.helpers.k8s_harness import CRD, api_client
from tests.helpers.kmock_cluster import EmulatorThread, crd_resources


@pytest.fixture
def cluster() -> Iterator[EmulatorThread]:
    """A fresh emulated API server (with the VoiceFinetune CRD's resource) for each test."""
    emulator = EmulatorThread(crd_resources(CRD)).start()
    yield emulator
    emulator.stop()


@pytest.fixture
def kubeconfig(cluster: EmulatorThread, tmp_path: Path) -> Path:
    return cluster.kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def client(cluster: EmulatorThread) -> Iterator[kubernetes.client.ApiClient]:
    api = api_client(cluster.url)
    yield api
    api.close()


@pytest.fixture
def custom(client) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(client)


@pytest.fixture
def batch(client) -> kubernetes.client.BatchV1Api:
    return kubernetes.client.BatchV1Api(client)


@pytest.fixture
def core(client) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(client)


@pytest.fixture
def start_operator(kubeconfig: Path, tmp_path: Path):
    """Start `vft operator` processes against the emulator; all are stopped at the end of the test."""
    from tests.helpers.k8s_harness import OperatorProcess, operator_environment

    started: list[OperatorProcess] = []

    def start(
        inference_url: str = "http://127.0.0.1:9",
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
    ) -> OperatorProcess:
        environment = env or operator_environment(kubeconfig, inference_url)
        process = OperatorProcess(environment, tmp_path / f"operator-{len(started)}.log", args)
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def services(tmp_path):
    """Start `vft` server processes (`services(args, env, name)`); all are stopped at the end of the test."""
    from tests.helpers.k8s_harness import VFT_BIN, Process, free_port

    started: list[Process] = []

    def start(args: list[str], env: dict[str, str], name: str) -> Process:
        port = free_port()
        process = Process(
            [VFT_BIN, *args, "--host", "127.0.0.1", "--port", str(port)],
            env,
            tmp_path / f"{name}.log",
            f"http://127.0.0.1:{port}",
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
