"""Operator throughput: N VoiceFinetunes created at once against a KMock API server, time until every one has its
training Job, against the floor of creating the same N Jobs directly with the client, in one run.

    python -m bench.operator [--count 200] [--threads 16] [--write-docs]

The emulator is the test suite's (tests/helpers/kmock_cluster.py); the operator is a real `vft operator`
process; the client is the real `kubernetes` client. Jobs are timed as they arrive on a watch.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import kubernetes
from voicefinetune_operator.config import OperatorConfig
from voicefinetune_operator.crd import read_spec
from voicefinetune_operator.jobs import build_training_job

from bench.results import DOCS, write_section
from tests.helpers.k8s_harness import (
    CRD,
    GROUP,
    PLURAL,
    VERSION,
    OperatorProcess,
    api_client,
    operator_environment,
    voicefinetune,
)
from tests.helpers.kmock_cluster import EmulatorThread, crd_resources

HEADING = "## Operator: create → Job (`bench/operator.py`)"


class JobArrivals:
    """Watches Jobs in a namespace and notes when each one first appears."""

    def __init__(self, client: kubernetes.client.ApiClient, namespace: str):
        self.batch = kubernetes.client.BatchV1Api(client)
        self.namespace = namespace
        self.seen: dict[str, float] = {}
        self._watch = kubernetes.watch.Watch()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> JobArrivals:
        self._thread.start()
        time.sleep(0.3)  # the watch is open
        return self

    def _run(self) -> None:
        try:
            for event in self._watch.stream(self.batch.list_namespaced_job, self.namespace):
                self.seen.setdefault(event["object"].metadata.name, time.monotonic())
        except Exception:  # the server went away at the end of the run
            return

    def wait_for(self, count: int, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while len(self.seen) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(self.seen)} of {count} Jobs after {timeout:.0f} s")
            time.sleep(0.02)
        return max(self.seen.values())

    def stop(self) -> None:
        self._watch.stop()


def create_all(count: int, threads: int, create) -> dict[int, float]:
    """Call ``create(i)`` for every i from ``threads`` threads at once; the start time of each call."""
    starts: dict[int, float] = {}

    def one(i: int) -> None:
        starts[i] = time.monotonic()
        create(i)

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(count)))
    return starts


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def floor_run(client: kubernetes.client.ApiClient, count: int, threads: int) -> dict[str, float]:
    """The same Jobs the operator would make, created directly: the API server's own cost."""
    config = OperatorConfig.from_env({"VFT_OPERATOR_SECRET_KEY": "bench"})
    manifests = []
    for i in range(count):
        body = {
            **voicefinetune(f"floor-{i:03d}"),
            "metadata": {"name": f"floor-{i:03d}", "namespace": "floor", "uid": f"uid-{i}"},
        }
        manifests.append(
            build_training_job(
                body,
                read_spec(body),
                config=config,
                progress_url="http://op/progress",
                progress_secret="progress-secret",
            )
        )
    arrivals = JobArrivals(client, "floor").start()
    batch = kubernetes.client.BatchV1Api(client)
    began = time.monotonic()
    starts = create_all(count, threads, lambda i: batch.create_namespaced_job("floor", manifests[i]))
    last = arrivals.wait_for(count, 120)
    arrivals.stop()
    latencies = [arrivals.seen[manifests[i]["metadata"]["name"]] - starts[i] for i in range(count)]
    return {"total": last - began, "p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99)}


def operator_run(client: kubernetes.client.ApiClient, count: int, threads: int) -> dict[str, float]:
    custom = kubernetes.client.CustomObjectsApi(client)
    arrivals = JobArrivals(client, "default").start()
    began = time.monotonic()
    starts = create_all(
        count,
        threads,
        lambda i: custom.create_namespaced_custom_object(
            GROUP, VERSION, "default", PLURAL, voicefinetune(f"voice-{i:03d}")
        ),
    )
    last = arrivals.wait_for(count, 300)
    arrivals.stop()
    latencies = [arrivals.seen[f"vft-train-voice-{i:03d}"] - starts[i] for i in range(count)]
    return {
        "total": last - began,
        "p50": percentile(latencies, 0.5),
        "p99": percentile(latencies, 0.99),
        "jobs": len(arrivals.seen),
    }


def table(count: int, threads: int, floor: dict[str, float], operated: dict[str, float], cpu: float) -> str:
    ratio = operated["total"] / floor["total"]
    return "\n".join(
        [
            f"`python -m bench.operator --count {count} --threads {threads}`: {count} creates sent at once from "
            f"{threads} client threads (the real `kubernetes` client) to the test suite's KMock API server; the operator "
            "is a real `vft operator` process; each Job's arrival is timed on a watch. The floor creates the same "
            f"{count} Job manifests directly. Measured in one run on {platform.machine()} "
            f"({os.cpu_count()} cores shared with other work), Python {platform.python_version()}.",
            "",
            "| Variant | Objects | Until all Jobs exist (s) | Jobs/s | create→Job p50 (ms) | create→Job p99 (ms) |",
            "|---|---:|---:|---:|---:|---:|",
            f"| Jobs created directly (floor) | {count} | {floor['total']:.2f} | {count / floor['total']:.0f} | "
            f"{floor['p50'] * 1000:.0f} | {floor['p99'] * 1000:.0f} |",
            f"| VoiceFinetunes through the operator | {count} | {operated['total']:.2f} | "
            f"{count / operated['total']:.0f} | {operated['p50'] * 1000:.0f} | {operated['p99'] * 1000:.0f} |",
            "",
            f"- The operator path takes {ratio:.1f}× the floor: per resource it is a watch event and about six "
            "API calls (Kopf's finalizer and bookkeeping patches, the Job POST, a fresh read and a patch of the status, an "
            "Event), against one POST for the floor.",
            f"- Exactly {operated['jobs']:.0f} Jobs for {count} resources (deterministic names: no duplicates). The "
            f"operator process used {cpu:.1f} s of CPU for the run.",
            "- The emulator and the client share one Python process (the API server's time counts on both sides).",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument(
        "--write-docs", action="store_true", help=f"replace the Operator section of {DOCS.name}"
    )
    args = parser.parse_args()

    cluster = EmulatorThread(crd_resources(CRD)).start()
    client = api_client(cluster.url)
    with tempfile.TemporaryDirectory() as scratch:
        kubeconfig = cluster.kubeconfig(Path(scratch) / "kubeconfig")
        floor = floor_run(client, args.count, args.threads)
        environment = operator_environment(kubeconfig, "http://127.0.0.1:9", {"VFT_REPAIR_INTERVAL": "30"})
        operator = OperatorProcess(environment, Path(scratch) / "operator.log").start()
        try:
            operated = operator_run(client, args.count, args.threads)
            cpu = _cpu_seconds(operator.process.pid)
        finally:
            operator.stop()
    client.close()
    cluster.stop()
    text = table(args.count, args.threads, floor, operated, cpu)
    print(text)
    if args.write_docs:
        write_section(HEADING, text)
    return 0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    sys.exit(main())
