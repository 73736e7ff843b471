"""`vft demo`: the whole product offline in a couple of minutes, walking the original service's microservice pattern.

It builds tiny random Qwen3-TTS models, starts an S3 server (moto) on loopback and `vft serve` with
``VFT_TINY_MODELS=1``, then acts as a client would: voice design → a dataset zip of that synthetic voice →
``POST /finetune`` (multipart upload) → polling with a progress bar → batch synthesis to S3 → a presigned URL
fetched → ``/ops/averages`` → a short chapter of the fine-tuned and a designed voice through ``POST /synthesis``, with
its manifest and subtitles. The WAVs land in ``--output-dir`` (24 kHz). Tiny random models make noise-like
"speech": the demo shows the plumbing, not voice quality.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import requests
import soundfile
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..lifecycle import STAGE_DONE, STAGE_TRAINING, STAGE_UPLOADING
from ..schemas import SAMPLE_RATE

DEMO_BUCKET = "qwen3-tts"
DEMO_INSTRUCT = "A warm male voice, middle-aged, calm"
DEMO_SPEAKER = "DemoVoice"
DATASET_SENTENCES = (
    "Test sentence for voice reference.",
    "The quick brown fox jumps over the lazy dog.",
    "A gentle breeze moved through the tall grass.",
    "Every morning the baker opens his shop at six.",
    "The old clock in the hall struck midnight.",
    "Rain fell softly on the roof all night long.",
)
BATCH_ITEMS = (
    {"text": "Chapter one begins.", "filename": "ch1_001.wav"},
    {"text": "The hero stood tall.", "filename": "ch1_002.wav"},
    {"text": "A cold wind blew from the north.", "filename": "ch1_003.wav"},
)
CHAPTER_ITEMS = (
    "The night train left the valley at nine.",
    "Is this seat taken, or may I sit here?",
    "She looked up from her book and smiled.",
    "Of course. We have a long way to go.",
)
CHAPTER_TIMEOUT_SECONDS = 300.0
MIN_CLIP_SECONDS = 0.6  # the trainer accepts clips of 0.3 s and more
MAX_DESIGN_ATTEMPTS = 24
SERVER_START_SECONDS = 180.0
TRAINING_TIMEOUT_SECONDS = 480.0

console = Console()


class DemoFailed(RuntimeError):
    pass


# The API calls (the presigned S3 downloads go without it: S3 refuses a second credential).
API = requests.Session()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vft demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, default=Path("demo-output"), help="where the WAVs go")
    parser.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs (default 3)")
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=None,
        help="tiny models cache (default $XDG_CACHE_HOME/voicefinetune/tiny-models)",
    )
    parser.add_argument("--port", type=int, default=0, help="API port (default: a free one)")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("VFT_API_KEY") or None,
        help="run `vft serve` with this VFT_API_KEY and send it with every call (default: $VFT_API_KEY, else none)",
    )
    return parser.parse_args(argv)


def default_models_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "voicefinetune" / "tiny-models"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- infrastructure: models, S3, API -----------------------------------------------------------------------------


@contextmanager
def s3_server():
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto logs every request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def demo_environment(data_dir: Path, models_dir: Path, s3_url: str) -> dict[str, str]:
    device = os.environ.get("DEVICE") or "cpu"
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "E2E_ACCESS_KEY": "demo",
        "E2E_SECRET_KEY": "demo",
        "E2E_BUCKET": DEMO_BUCKET,
        "E2E_ENDPOINT_URL": s3_url,
        "DEVICE": device,
        "VFT_DATA_DIR": str(data_dir),
        "VFT_TINY_MODELS": "1",
        "VFT_TINY_MODELS_DIR": str(models_dir),
    }


@contextmanager
def api_server(env: dict[str, str], port: int, log_path: Path):
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "voicefinetune.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while True:
            if process.poll() is not None:
                raise DemoFailed(f"`vft serve` exited with code {process.returncode}; see {log_path}")
            try:
                if requests.get(url + "/", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise DemoFailed(
                    f"`vft serve` did not answer within {SERVER_START_SECONDS:.0f}s; see {log_path}"
                )
            time.sleep(0.25)
        yield url
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# --- the client: the original service's microservice pattern ------------------------------------------------


def check(response: requests.Response, what: str) -> Any:
    if not response.ok:
        raise DemoFailed(f"{what} failed: HTTP {response.status_code}: {response.text[:500]}")
    return (
        response.json()
        if response.headers.get("content-type", "").startswith("application/json")
        else response
    )


def save_wav(data: bytes, path: Path) -> float:
    """Write the WAV and return its duration; refuses anything that is not 24 kHz audio."""
    info = soundfile.info(io.BytesIO(data))
    if info.samplerate != SAMPLE_RATE:
        raise DemoFailed(f"{path.name}: expected {SAMPLE_RATE} Hz audio, got {info.samplerate} Hz")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return info.frames / info.samplerate


def voice_design(api: str, out: Path, saved: list[tuple[Path, float]]) -> list[Any]:
    from .sample_data import Clip

    step("0. Voice design", "a reference voice from a description, uploaded to S3")
    body = check(
        API.post(
            f"{api}/voice-design",
            json={
                "text": DATASET_SENTENCES[0],
                "instruct": DEMO_INSTRUCT,
                "s3_filename": "ref_voice.wav",
                "upload_to_s3": True,
            },
            timeout=120,
        ),
        "voice design",
    )
    console.print(f"   Voice design: {body['s3_url']}")
    clips: list[Clip] = []
    for _attempt in range(MAX_DESIGN_ATTEMPTS):
        if len(clips) == len(DATASET_SENTENCES):
            break
        text = DATASET_SENTENCES[len(clips)]
        wav = check(
            API.post(
                f"{api}/voice-design",
                json={
                    "text": text,
                    "instruct": DEMO_INSTRUCT,
                    "language": "English",
                    "upload_to_s3": False,
                },
                timeout=120,
            ),
            "voice design",
        ).content
        waveform, rate = soundfile.read(io.BytesIO(wav), dtype="float32")
        if (
            len(waveform) < MIN_CLIP_SECONDS * rate
        ):  # a random tiny model sometimes stops at once: sample again
            continue
        path = out / "voice_design" / f"clip_{len(clips) + 1:02d}.wav"
        saved.append((path, save_wav(wav, path)))
        clips.append(Clip(text, waveform, rate))
    if len(clips) < 3:
        raise DemoFailed(f"voice design gave only {len(clips)} clips of at least {MIN_CLIP_SECONDS}s")
    console.print(f"   {len(clips)} clips of the designed voice in {out / 'voice_design'}")
    return clips


def build_dataset(clips: list[Any], folder: Path) -> Path:
    from .sample_data import write_dataset_zip

    step("1a. Dataset", "train.jsonl + data/*.wav (the dataset-maker layout)")
    path = write_dataset_zip(folder / "voice_dataset.zip", clips[1:], ref=clips[0])
    console.print(f"   {path} ({path.stat().st_size // 1024} KiB, {len(clips) - 1} clips + ref_audio.wav)")
    return path


def finetune(api: str, dataset: Path, epochs: int) -> str:
    step("1b. Fine-tune", "POST /finetune with the zip as a multipart upload")
    with open(dataset, "rb") as handle:
        body = check(
            API.post(
                f"{api}/finetune",
                files={"dataset": handle},
                data={"speaker_name": DEMO_SPEAKER, "num_epochs": epochs},
                timeout=120,
            ),
            "finetune",
        )
    console.print(f"   job {body['job_id']}: {body['status']}, config {body['config']}")
    return body["job_id"]


def wait_for_training(api: str, job_id: str) -> dict:
    step("2. Training", f"polling GET /jobs/{job_id}")
    deadline = time.monotonic() + TRAINING_TIMEOUT_SECONDS
    columns = (
        TextColumn("   {task.description}"),
        BarColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("queued", total=None, detail="")
        while True:
            job = check(API.get(f"{api}/jobs/{job_id}", timeout=30), "job status")
            progress = job.get("progress") or {}
            total = progress.get("total_epochs") or None
            stage = progress.get("stage") or job["status"]
            done_epochs = progress.get("epoch", 0) + (1 if stage in (STAGE_UPLOADING, STAGE_DONE) else 0)
            loss = progress.get("loss")
            detail = (
                f"epoch {progress.get('epoch', 0) + 1}/{total}"
                if total and stage == STAGE_TRAINING
                else stage
            )
            if loss is not None:
                detail += f"  loss {loss:.3f}"
            if job["status"] in ("loading", "ready"):
                done_epochs = total or 1
            bar.update(task, description=job["status"], total=total, completed=done_epochs, detail=detail)
            if job["status"] == "ready":
                return job
            if job["status"] == "failed":
                raise DemoFailed(f"training failed: {job.get('error')}")
            if time.monotonic() > deadline:
                raise DemoFailed(f"training did not finish within {TRAINING_TIMEOUT_SECONDS:.0f}s: {job}")
            time.sleep(0.5)


def synthesize(api: str, job_id: str, out: Path, saved: list[tuple[Path, float]]) -> None:
    step("3. Batch synthesis", f"POST /infer/{job_id}/batch → S3, then the presigned URLs fetched")
    items = check(
        API.post(
            f"{api}/infer/{job_id}/batch",
            json={"items": list(BATCH_ITEMS), "language": "English"},
            timeout=300,
        ),
        "batch synthesis",
    )
    for item in items:
        if "presigned_url" not in item:
            raise DemoFailed(f"batch item failed: {item}")
        console.print(f"   Audio: {item['s3_url']}")
        audio = requests.get(item["presigned_url"], timeout=60)
        audio.raise_for_status()
        path = out / "fine_tuned" / Path(item["s3_key"]).name
        saved.append((path, save_wav(audio.content, path)))
    console.print(f"   downloaded {len(items)} WAVs through their presigned URLs into {out / 'fine_tuned'}")


def chapter(api: str, job_id: str, out: Path, saved: list[tuple[Path, float]]) -> None:
    step(
        "5. A two-voice chapter",
        "POST /synthesis: the fine-tuned voice and a designed one, joined, with timings",
    )
    items = [
        {"text": text, "voice": job_id if n % 2 == 0 else "design:a young man, warm and quick"}
        for n, text in enumerate(CHAPTER_ITEMS)
    ]
    body: dict[str, Any] = {"items": items, "book_id": "demo-book", "chapter_id": "ch01"}
    synthesis_id = check(API.post(f"{api}/synthesis", json=body, timeout=60), "chapter")["synthesis_id"]
    deadline = time.monotonic() + CHAPTER_TIMEOUT_SECONDS
    while (status := check(API.get(f"{api}/synthesis/{synthesis_id}", timeout=30), "chapter status"))[
        "status"
    ] in ("queued", "running"):
        if time.monotonic() > deadline:
            raise DemoFailed(f"the chapter did not finish within {CHAPTER_TIMEOUT_SECONDS:.0f}s: {status}")
        time.sleep(0.3)
    if status["status"] != "succeeded":
        raise DemoFailed(f"the chapter {status['status']}: {status['error']}")
    output = status["output"]
    folder = out / "chapter"
    for key in ("manifest_url", "subtitles_url"):
        answer = requests.get(output[key], timeout=60)
        answer.raise_for_status()
        name = Path(output[key.replace("_url", "_s3_key")]).name
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(answer.content)
    audio = requests.get(output["presigned_url"], timeout=60)
    audio.raise_for_status()
    path = folder / Path(output["s3_key"]).name
    saved.append((path, save_wav(audio.content, path)))
    console.print(
        f"   {output['s3_key']}: {output['duration_s']:.2f}s, manifest and WebVTT subtitles in {folder}"
    )


def show_averages(api: str) -> None:
    step("4. Operation timing", "GET /ops/averages")
    averages = check(API.get(f"{api}/ops/averages", timeout=30), "ops averages")
    table = Table("operation", "average seconds", "count", box=None, padding=(0, 3))
    for name, entry in averages.items():
        table.add_row(name, f"{entry['avg_seconds']:.3f}", str(entry["count"]))
    console.print(table)
    if "inference_custom_voice" in averages:
        console.print(f"   Avg inference time: {averages['inference_custom_voice']['avg_seconds']}s")


def step(title: str, what: str) -> None:
    console.print(f"\n[bold cyan]{title}[/]  [dim]{what}[/]")


def run(args: argparse.Namespace) -> list[tuple[Path, float]]:
    from ..settings import Settings
    from ..storage import Storage
    from .tiny_models import ensure_tiny_models

    out = args.output_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    saved: list[tuple[Path, float]] = []
    with ExitStack() as stack:
        step("Setup", "tiny models, S3 on loopback, `vft serve`")
        models_dir = (args.models_dir or default_models_dir()).resolve()
        with console.status("   building tiny random Qwen3-TTS models (first run only)..."):
            ensure_tiny_models(models_dir)
        console.print(f"   tiny models: {models_dir}")
        s3_url = stack.enter_context(s3_server())
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vft-demo-")))
        env = demo_environment(work / "data", models_dir, s3_url)
        if args.api_key:
            env["VFT_API_KEY"] = args.api_key
            API.headers["Authorization"] = f"Bearer {args.api_key}"
            console.print("   API key: on (VFT_API_KEY)")
        Storage(Settings.from_env(env)).ensure_bucket()
        console.print(f"   S3 (moto): {s3_url}, bucket {DEMO_BUCKET}")
        port = args.port or free_port()
        log_path = out / "server.log"
        log_path.unlink(missing_ok=True)
        with console.status("   starting `vft serve`..."):
            api = stack.enter_context(api_server(env, port, log_path))
        console.print(f"   API: {api} (Swagger UI at {api}/docs; log in {log_path})")

        clips = voice_design(api, out, saved)
        dataset = build_dataset(clips, out)
        job_id = finetune(api, dataset, args.epochs)
        job = wait_for_training(api, job_id)
        console.print(f"   ready: inference_url {job['inference_url']}, checkpoint {job['checkpoint_path']}")
        synthesize(api, job_id, out, saved)
        show_averages(api)
        chapter(api, job_id, out, saved)
    return saved


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    try:
        saved = run(args)
    except (DemoFailed, requests.RequestException) as exc:
        console.print(f"\n[bold red]demo failed:[/] {exc}")
        return 1
    console.print(
        f"\n[bold green]Done in {time.monotonic() - started:.0f}s.[/] "
        f"{len(saved)} WAVs ({SAMPLE_RATE} Hz) in [bold]{args.output_dir.resolve()}[/]:"
    )
    for path, seconds in saved:
        console.print(f"   {path.relative_to(args.output_dir.resolve())}  {seconds:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
