"""Job reads of the facade with 1,000 jobs recorded vs a bare FastAPI endpoint, measured side by side in one run.

Each app runs in its own `uvicorn` subprocess (one worker) on loopback; the client measures sequential latency
(p50/p95/p99) and throughput with concurrent requests. The facade serves the real local backend and job store;
its 1,000 job records (finished jobs with progress, config and checkpoint) are written to disk first and loaded at
start, as after a restart.

    .venv/bin/python -m bench.api [--jobs 1000] [--requests 400] [--seconds 4] [--write-docs]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.results import DOCS, write_section

SECTION = "## API: job reads (`bench/api.py`)"
CONCURRENCY = 8


# --- the servers (run in subprocesses) ---------------------------------------------------------------------------


def bare_app():
    from fastapi import FastAPI

    app = FastAPI()
    payload = {"job_id": "a1b2c3d4e5f6", "status": "ready", "inference_url": "/infer/a1b2c3d4e5f6"}

    @app.get("/bare/{job_id}")
    async def bare(job_id: str) -> dict:
        return payload

    return app


def facade_app(data_dir: Path):
    from voicefinetune.serve import create_local_app
    from voicefinetune.settings import Settings

    return create_local_app(Settings(device="cpu", use_flash_attn=False, data_dir=data_dir))


def write_jobs(data_dir: Path, count: int) -> list[str]:
    from voicefinetune.facade.jobstore import JobRecord, JobStore
    from voicefinetune.lifecycle import STAGE_DONE
    from voicefinetune.schemas import FinetuneConfig, FinetuneRequest, Job, Progress

    store = JobStore(data_dir / "state" / "jobs")
    store.load()
    ids = []
    now = time.time()
    for i in range(count):
        job_id = f"{i:012x}"
        ids.append(job_id)
        job = Job(
            job_id=job_id,
            status="ready",
            speaker_name=f"voice{i}",
            progress=Progress(
                stage=STAGE_DONE, epoch=9, total_epochs=10, step=12, loss=0.0234, global_step=130
            ),
            inference_url=f"/infer/{job_id}",
            checkpoint_path=f"jobs/{job_id}/output/checkpoint-epoch-9",
            config=FinetuneConfig(num_epochs=10, batch_size=2, lr=1e-6, flash_attn=False),
            dataset_s3_key=f"datasets/voice{i}/dataset.zip",
            created_at=now + i,
            updated_at=now + i,
        )
        request = FinetuneRequest(
            dataset_s3_key=job.dataset_s3_key, speaker_name=job.speaker_name, num_epochs=10, job_id=job_id
        )
        store.save(JobRecord(job=job, request=request))
    return ids


def serve(kind: str, port: int, data_dir: str) -> None:
    import logging

    import uvicorn

    logging.disable(logging.WARNING)
    app = bare_app() if kind == "bare" else facade_app(Path(data_dir))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", access_log=False)


# --- the client --------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(kind: str, data_dir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.api",
            "--serve",
            kind,
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
        ],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/docs", timeout=1)
            return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{kind} server did not start")


def latency(url: str, paths: list[str], count: int) -> dict[str, float]:
    samples = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for i in range(20):  # warm-up
            client.get(paths[i % len(paths)]).raise_for_status()
        for i in range(count):
            started = time.perf_counter()
            response = client.get(paths[i % len(paths)])
            samples.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
    cuts = statistics.quantiles(samples, n=100)
    return {
        "p50": statistics.median(samples),
        "p95": cuts[94],
        "p99": cuts[98],
        "bytes": len(response.content),
    }


async def _throughput(url: str, paths: list[str], seconds: float) -> float:
    done = 0
    stop = time.perf_counter() + seconds

    async def worker(offset: int, client: httpx.AsyncClient) -> None:
        nonlocal done
        i = offset
        while time.perf_counter() < stop:
            (await client.get(paths[i % len(paths)])).raise_for_status()
            done += 1
            i += CONCURRENCY

    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(k, client) for k in range(CONCURRENCY)))
        return done / (time.perf_counter() - started)


def measure(args: argparse.Namespace) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="vft-bench-api-") as folder:
        data_dir = Path(folder) / "data"
        ids = write_jobs(data_dir, args.jobs)
        cases = [
            ("bare", "bare FastAPI endpoint (`GET /bare/{id}`, constant dict)", [f"/bare/{i}" for i in ids]),
            ("facade", f"`GET /jobs/{{id}}` ({args.jobs} jobs recorded)", [f"/jobs/{i}" for i in ids]),
            ("facade", f"`GET /jobs` (all {args.jobs} jobs)", ["/jobs"]),
        ]
        servers = {kind: start(kind, data_dir) for kind in ("bare", "facade")}
        try:
            for kind, label, paths in cases:
                url = servers[kind][1]
                count = args.requests if len(paths) > 1 else max(50, args.requests // 8)
                lat = latency(url, paths, count)
                rps = asyncio.run(_throughput(url, paths, args.seconds))
                rows.append({"case": label, **lat, "rps": rps})
                print(
                    f"{label}: p50 {lat['p50']:.2f} ms, p95 {lat['p95']:.2f} ms, {rps:.0f} req/s", flush=True
                )
        finally:
            for process, _ in servers.values():
                process.terminate()
                process.wait(10)
    return rows


def table(rows: list[dict], args: argparse.Namespace) -> str:
    lines = [
        f"One run on {platform.machine()} with {os.cpu_count()} CPUs (shared), Python {platform.python_version()}; "
        f"one uvicorn worker per app; client on the same machine. Latency: {args.requests} sequential requests "
        f"(keep-alive); throughput: {CONCURRENCY} concurrent requests for {args.seconds:g} s.",
        "",
        "| request | p50 ms | p95 ms | p99 ms | response bytes | req/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['case']} | {row['p50']:.2f} | {row['p95']:.2f} | {row['p99']:.2f} | {row['bytes']:,} "
            f"| {row['rps']:.0f} |"
        )
    bare, one, every = rows
    lines += [
        "",
        f"`GET /jobs/{{id}}` answers in {one['p50'] / bare['p50']:.1f}x the bare endpoint's median time (a dict lookup "
        f"and one model serialization); `GET /jobs` serializes every record ({every['bytes'] / 1024:.0f} KiB for "
        f"{args.jobs} jobs) with pydantic-core directly, {every['p50'] / bare['p50']:.1f}x the bare median. "
        "Throughput is bounded by the Python client sharing the same cores, so compare it within the table only.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--write-docs", action="store_true", help=f"replace the API section of {DOCS.name}")
    parser.add_argument("--serve", choices=("bare", "facade"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.data_dir)
        return
    text = table(measure(args), args)
    print("\n" + text)
    if args.write_docs:
        write_section(SECTION, text)
        print(json.dumps({"written": str(DOCS)}))


if __name__ == "__main__":
    main()
