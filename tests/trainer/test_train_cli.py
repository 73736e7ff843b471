"""`vft train` end to end as a child process: moto S3, tiny models, real training, real checkpoints."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from voicefinetune_trainer.pipeline import TrainingPipeline, TrainRequest, latest_checkpoint, run_training
from voicefinetune_trainer.reporter import FanOutReporter, HttpReporter

from voicefinetune.devtools.sample_data import write_dataset_zip
from voicefinetune.settings import Settings
from voicefinetune.storage import Storage

PROGRESS_FIELDS = ("stage", "epoch", "total_epochs", "step", "loss", "global_step")
STAGE_ORDER = ["preparing", "training", "uploading", "done"]
TRAIN_TIMEOUT = 300
JOB_ID = "hero1-e2e"
SPEAKER = "Hero1"
DATASET_KEY = "datasets/Hero1/dataset.zip"
TOKEN = "progress-secret"
LR = "1e-3"
TRAINING_STATE_NAMES = {"optimizer.pt", "train.jsonl"}


@dataclass
class TrainRun:
    returncode: int
    events: list[dict[str, Any]]
    stderr: str

    @property
    def last(self) -> dict[str, Any]:
        assert self.events, f"no progress events; stderr:\n{self.stderr[-3000:]}"
        return self.events[-1]

    def progress(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["stage"] == "training" and e["loss"] is not None]

    def losses(self) -> list[tuple[int, float]]:
        return [
            (e["epoch"], e["loss"]) for e in self.events if e["stage"] == "training" and e["loss"] is not None
        ]

    def stages(self) -> list[str]:
        order: list[str] = []
        for event in self.events:
            if not order or order[-1] != event["stage"]:
                order.append(event["stage"])
        return order


def vft_command() -> list[str]:
    script = Path(sys.executable).with_name("vft")
    return [str(script)] if script.exists() else [sys.executable, "-m", "voicefinetune.cli"]


def run_vft_train(args: list[str], env: dict[str, str]) -> TrainRun:
    """`vft train ARGS` in a child process; every stdout line must be a JSON event."""
    process = subprocess.run(
        [*vft_command(), "train", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=TRAIN_TIMEOUT,
    )
    events = []
    for line in process.stdout.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            pytest.fail(f"non-JSON line on stdout: {line!r}\nstderr:\n{process.stderr[-3000:]}")
    return TrainRun(process.returncode, events, process.stderr)


def train_args(job_id: str, dataset: str | Path, epochs: int = 1, *extra: str) -> list[str]:
    return [
        "--job-id",
        job_id,
        "--dataset",
        str(dataset),
        "--speaker-name",
        SPEAKER,
        "--num-epochs",
        str(epochs),
        "--batch-size",
        "2",
        "--lr",
        LR,
        *extra,
    ]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def job_dir(env: dict[str, str], job_id: str) -> Path:
    return Settings.from_env(env).job_dir(job_id)


def assert_inputs_purged(folder: Path) -> None:
    leftovers = [
        p
        for p in folder.rglob("*")
        if p.name in TRAINING_STATE_NAMES or p.suffix in {".wav", ".zip"} or p.name == "dataset"
    ]
    assert not leftovers, leftovers


@pytest.fixture(scope="module")
def trained(trainer_env, tmp_path_factory, clips, ref_clip, module_progress_sink) -> TrainRun:
    """One 2-epoch run from a dataset on S3, progress also POSTed to a local endpoint."""
    archive = write_dataset_zip(tmp_path_factory.mktemp("dataset") / "dataset.zip", clips, ref=ref_clip)
    Storage(Settings.from_env(trainer_env)).upload_file(archive, DATASET_KEY)
    env = {**trainer_env, "VFT_PROGRESS_URL": module_progress_sink.url, "VFT_PROGRESS_TOKEN": TOKEN}
    run = run_vft_train(train_args(JOB_ID, DATASET_KEY, 2), env)
    assert run.returncode == 0, f"{run.last}\n{run.stderr[-4000:]}"
    return run


def test_training_reports_progress_and_loss_goes_down(trained):
    assert trained.stages() == STAGE_ORDER
    for event in trained.events:
        assert set(PROGRESS_FIELDS) <= event.keys(), event
        assert event["job_id"] == JOB_ID and isinstance(event["time"], float)
    steps = [e for e in trained.events if e["stage"] == "training" and e["global_step"] > 0]
    assert [e["global_step"] for e in steps] == [1, 2, 3, 4]
    assert {e["epoch"] for e in steps} == {0, 1} and all(e["total_epochs"] == 2 for e in steps)
    by_epoch = {epoch: np.mean([loss for e, loss in trained.losses() if e == epoch]) for epoch in (0, 1)}
    assert by_epoch[1] < by_epoch[0], trained.losses()
    done = trained.last
    assert done["stage"] == "done"
    assert done["s3_prefix"] == f"checkpoints/{JOB_ID}"
    assert Path(done["checkpoint_path"]).name == "checkpoint-epoch-1"
    assert set(done["timings"]) == {"preparing", "training", "uploading"}


def test_events_say_the_attention_of_the_loaded_model_from_its_loading_on(trained):
    """On the CPU the model loads with sdpa: from the first event after loading (encoding the audio codes) every
    event says flash_attn false; the events before it cannot know."""
    encoding = next(
        i for i, e in enumerate(trained.events) if e.get("message", "").startswith("encoding audio")
    )
    assert [e.get("flash_attn") for e in trained.events[:encoding]] == [None] * encoding
    assert [e.get("flash_attn") for e in trained.events[encoding:]] == [False] * (
        len(trained.events) - encoding
    )


def test_progress_is_posted_with_the_bearer_token(trained, module_progress_sink):
    posted = module_progress_sink.events
    assert posted and set(module_progress_sink.authorizations) == {f"Bearer {TOKEN}"}
    assert [stage for stage in STAGE_ORDER if any(e["stage"] == stage for e in posted)] == STAGE_ORDER
    assert posted[-1] == trained.last
    assert all(set(PROGRESS_FIELDS) <= e.keys() for e in posted)


def test_published_checkpoint_is_a_custom_voice_that_speaks(trained, trainer_env, tmp_path):
    from voicefinetune.qwen import load_model

    settings = Settings.from_env(trainer_env)
    folder = Storage(settings).download_dir(trained.last["s3_prefix"], tmp_path / "checkpoint")
    assert not {p.name for p in folder.rglob("*")} & TRAINING_STATE_NAMES
    tts = load_model(folder, settings)
    assert tts.model.tts_model_type == "custom_voice"
    assert tts.get_supported_speakers() == [SPEAKER.lower()]
    wavs, rate = tts.generate_custom_voice(
        text="Hello from the new voice.", speaker=SPEAKER, language="English"
    )
    assert rate == 24000 and len(wavs[0]) > 0
    assert np.isfinite(wavs[0]).all() and np.abs(wavs[0]).max() > 0


def test_no_dataset_or_optimizer_files_remain(trained, trainer_env):
    folder = job_dir(trainer_env, JOB_ID)
    assert_inputs_purged(folder)
    assert sorted(p.name for p in (folder / "output").iterdir()) == ["checkpoint-epoch-1"]
    assert (folder / "output" / "checkpoint-epoch-1" / "model.safetensors").is_file()


def test_resume_from_the_published_checkpoint_trains_further(trained, trainer_env):
    run = run_vft_train(
        train_args("hero1-resumed", DATASET_KEY, 1, "--resume-from", f"checkpoints/{JOB_ID}"), trainer_env
    )
    assert run.returncode == 0, f"{run.last}\n{run.stderr[-4000:]}"
    assert not [e for e in run.events if "warning" in e]
    assert any("resuming from" in e.get("message", "") for e in run.events)
    first_loss_before, first_loss_resumed = trained.losses()[0][1], run.losses()[0][1]
    assert first_loss_resumed < first_loss_before, (trained.losses(), run.losses())
    before, after = trained.progress(), run.progress()
    assert (
        after[0]["epoch"] == before[-1]["epoch"] + 1 and after[0]["global_step"] > before[-1]["global_step"]
    )
    assert run.last["stage"] == "done" and run.last["s3_prefix"] == "checkpoints/hero1-resumed"
    assert_inputs_purged(job_dir(trainer_env, "hero1-resumed"))


def test_missing_resume_checkpoint_falls_back_to_the_base_model(trainer_env, dataset_zip):
    dead_reporter = f"http://127.0.0.1:{closed_port()}/progress"  # a failing reporter must not stop training
    args = train_args(
        "hero1-fallback",
        dataset_zip,
        1,
        "--resume-from",
        "checkpoints/no-such-job",
        "--progress-url",
        dead_reporter,
    )
    run = run_vft_train(args, trainer_env)
    assert run.returncode == 0, f"{run.last}\n{run.stderr[-4000:]}"
    warnings = [e["warning"] for e in run.events if "warning" in e]
    assert len(warnings) == 1 and "no-such-job" in warnings[0] and "base model" in warnings[0]
    assert run.last["stage"] == "done"
    assert "progress endpoint" in run.stderr


def test_unreachable_s3_during_upload_retries_then_fails_keeping_the_checkpoint(trainer_env, dataset_zip):
    env = {**trainer_env, "E2E_ENDPOINT_URL": f"http://127.0.0.1:{closed_port()}"}
    run = run_vft_train(train_args("hero1-offline", dataset_zip, 1), env)
    assert run.returncode != 0
    failed = run.last
    assert failed["stage"] == "failed" and failed["failed_stage"] == "uploading"
    assert "could not publish the checkpoint" in failed["error"] and "E2E_ENDPOINT_URL" in failed["error"]
    retries = [e for e in run.events if "upload attempt" in e.get("warning", "")]
    assert len(retries) == 2
    kept = Path(failed["checkpoint_path"])
    # The error names the kept checkpoint inside the data folder, without the server's absolute path.
    assert (
        kept.relative_to(env["VFT_DATA_DIR"]).as_posix() in failed["error"]
        and str(kept) not in failed["error"]
    )
    assert (kept / "model.safetensors").is_file() and (kept / "config.json").is_file()
    assert_inputs_purged(job_dir(env, "hero1-offline"))


def test_bad_dataset_fails_fast_and_writes_nothing_outside_its_job_folder(bad_dataset, trainer_env, tmp_path):
    env = {**trainer_env, "VFT_DATA_DIR": str(tmp_path / "data")}
    folder = job_dir(env, "bad-dataset")
    before = set(tmp_path.rglob("*"))
    run = run_vft_train(train_args("bad-dataset", bad_dataset.path, 1), env)
    assert run.returncode != 0
    assert run.last["stage"] == "failed" and all(e["stage"] in {"preparing", "failed"} for e in run.events)
    for fragment in bad_dataset.fragments:
        assert fragment in run.last["error"], run.last["error"]
    assert {p for p in set(tmp_path.rglob("*")) - before if not p.is_relative_to(folder)} <= {
        tmp_path / "data",
        tmp_path / "data" / "jobs",
    }
    assert not Path("/etc/x").exists()
    assert_inputs_purged(folder)


def test_speaker_name_with_underscore_and_digit_is_refused(trainer_env, dataset_zip):
    args = train_args("hero-underscore", dataset_zip, 1)
    args[args.index(SPEAKER)] = "Hero_1"
    run = run_vft_train(args, trainer_env)
    assert run.returncode != 0
    assert run.events == [run.last] and run.last["stage"] == "failed"
    assert "underscore followed by a number" in run.last["error"] and "Hero1" in run.last["error"]


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (("--gradient-accumulation-steps", "0"), "--gradient-accumulation-steps must be at least 1; got 0"),
        (("--language", "Klingon"), "--language: unsupported language 'Klingon'"),
    ],
)
def test_bad_accumulation_or_language_is_refused_before_training(trainer_env, dataset_zip, extra, fragment):
    run = run_vft_train(train_args("hero-bad-option", dataset_zip, 1, *extra), trainer_env)
    assert run.returncode == 1
    assert run.events == [run.last] and run.last["stage"] == "failed"
    assert fragment in run.last["error"]


def test_bad_arguments_still_end_with_a_failed_event(trainer_env):
    run = run_vft_train(["--job-id", "x"], trainer_env)
    assert run.returncode == 2
    assert run.last["stage"] == "failed" and "--dataset" in run.last["error"]


def test_in_process_run_resumes_from_a_local_folder_without_s3(trained, trainer_env, dataset_zip):
    settings = replace(Settings.from_env(trainer_env), s3_access_key=None, s3_secret_key=None)
    events: list[dict[str, Any]] = []
    request = TrainRequest(
        job_id="hero1-local",
        dataset=str(dataset_zip),
        speaker_name=SPEAKER,
        num_epochs=1,
        batch_size=4,
        lr=float(LR),
        resume_from=trained.last["checkpoint_path"],
    )
    last = run_training(request, settings=settings, reporter=ListReporter(events))
    assert last["stage"] == "done", last
    assert "s3_prefix" not in last and "S3 not configured" in last["message"]
    # A message shows a server path relative to the data folder (else by its last part), never whole.
    resumed = Path(request.resume_from)
    shown = (
        resumed.relative_to(settings.data_dir) if resumed.is_relative_to(settings.data_dir) else resumed.name
    )
    assert any(e.get("message") == f"resuming from {shown}" for e in events), [
        e.get("message") for e in events
    ]
    assert events[-2]["loss"] < trained.losses()[0][1]
    assert_inputs_purged(settings.job_dir("hero1-local"))


def test_a_job_that_cannot_fit_the_gpu_fails_at_once_saying_what_to_change(
    trainer_env, dataset_zip, monkeypatch
):
    """The fit check with simulated free memory (1 MiB: far below the estimate) in place of CUDA's."""
    from voicefinetune_trainer import fit, sft

    def check_with_one_gib_free(model, recipe, prepared, *, config, settings):
        fit.check_training_fits(
            model,
            recipe,
            prepared,
            batch_size=config.batch_size,
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            free_bytes=2**20,
        )

    monkeypatch.setattr(sft, "_check_fits", check_with_one_gib_free)
    settings = replace(Settings.from_env(trainer_env), s3_access_key=None, s3_secret_key=None)
    events: list[dict[str, Any]] = []
    request = TrainRequest(
        job_id="hero1-too-big",
        dataset=str(dataset_zip),
        speaker_name=SPEAKER,
        num_epochs=1,
        batch_size=4,
        lr=float(LR),
    )
    last = run_training(request, settings=settings, reporter=ListReporter(events))
    assert last["stage"] == "failed" and last["failed_stage"] == "training", last
    assert last["error"].startswith("training will not fit in GPU memory: estimated peak")
    assert "lower batch_size to 2 with gradient_accumulation_steps 2" in last["error"]
    assert not [e for e in events if e.get("global_step")], "no step was taken"


# --- reporters and helpers, in-process ----------------------------------------------------------------------


@dataclass
class ListReporter:
    events: list[dict[str, Any]]

    def emit(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def close(self) -> None:
        pass


def _event(stage: str, step: int) -> dict[str, Any]:
    return {"stage": stage, "epoch": 0, "total_epochs": 1, "step": step, "loss": 1.0, "global_step": step}


def test_http_reporter_throttles_training_events_but_sends_every_stage_change(progress_sink):
    reporter = HttpReporter(progress_sink.url, token="t", min_interval=0.5)
    reporter.emit(_event("preparing", 0))
    for step in range(1, 201):
        reporter.emit(_event("training", step))
    reporter.emit(_event("uploading", 200))
    reporter.emit(_event("done", 200))
    reporter.close()
    stages = [e["stage"] for e in progress_sink.events]
    assert stages[0] == "preparing" and stages[-2:] == ["uploading", "done"]
    training = [e for e in progress_sink.events if e["stage"] == "training"]
    assert 1 <= len(training) <= 3 and training[-1]["global_step"] == 200
    assert set(progress_sink.authorizations) == {"Bearer t"}


def test_failing_reporters_never_raise(progress_sink, capsys):
    progress_sink.status = 500
    broken = HttpReporter(progress_sink.url, min_interval=0)
    dead = HttpReporter(f"http://127.0.0.1:{closed_port()}/", min_interval=0, timeout=1)

    class Exploding:
        def emit(self, event):
            raise OSError("disk full")

        def close(self):
            raise OSError("disk full")

    fan_out = FanOutReporter([Exploding(), broken, dead])
    for stage in STAGE_ORDER:
        fan_out.emit(_event(stage, 1))
    fan_out.close()
    assert broken.failed == 4 and dead.failed == 4 and broken.sent == 0


def test_checkpoints_of_an_earlier_run_are_cleared_but_a_resume_source_among_them_is_kept(tmp_path):
    settings = Settings.from_env({"VFT_DATA_DIR": str(tmp_path)})
    request = TrainRequest(
        job_id="again", dataset="x.zip", speaker_name=SPEAKER, num_epochs=1, batch_size=1, lr=0.1
    )
    pipeline = TrainingPipeline(request, settings, ListReporter([]))
    for epoch in (1, 9):
        (pipeline.output_dir / f"checkpoint-epoch-{epoch}").mkdir(parents=True)
        (pipeline.output_dir / f"checkpoint-epoch-{epoch}" / "config.json").write_text("{}")
    moved = pipeline._clear_earlier_checkpoints(pipeline.output_dir / "checkpoint-epoch-1")
    assert moved == pipeline.resume_dir and (moved / "config.json").is_file()
    assert list(pipeline.output_dir.iterdir()) == []


def test_latest_checkpoint_picks_the_highest_epoch(tmp_path):
    for epoch in (0, 2, 10):
        (tmp_path / f"checkpoint-epoch-{epoch}").mkdir()
        (tmp_path / f"checkpoint-epoch-{epoch}" / "config.json").write_text("{}")
    (tmp_path / "checkpoint-epoch-11").mkdir()  # incomplete: no config.json
    assert latest_checkpoint(tmp_path).name == "checkpoint-epoch-10"
    assert latest_checkpoint(tmp_path / "checkpoint-epoch-2").name == "checkpoint-epoch-2"
    with pytest.raises(FileNotFoundError):
        latest_checkpoint(tmp_path / "checkpoint-epoch-11")
