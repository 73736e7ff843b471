"""`vft train`: fine-tune a voice from a dataset zip; the training Job's command and the local backend's child.

stdout carries only progress events, one JSON object per line (the caller parses them); logs and anything the
libraries print go to stderr. Exit code 0 when the last event is ``done``, 1 when it is ``failed``, 2 for
unusable arguments (also reported as a ``failed`` event).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, NoReturn

from voicefinetune.lifecycle import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_GRADIENT_ACCUMULATION_STEPS,
    DEFAULT_LANGUAGE,
    DEFAULT_LORA_RANK,
    DEFAULT_LR,
    DEFAULT_METHOD,
    DEFAULT_NUM_EPOCHS,
    STAGE_FAILED,
)
from voicefinetune.schemas import check_lora_targets
from voicefinetune.settings import Settings
from voicefinetune_trainer.pipeline import JobInterrupted, TrainRequest, run_training
from voicefinetune_trainer.progress import Progress
from voicefinetune_trainer.reporter import FanOutReporter, HttpReporter, JsonLinesReporter, Reporter

EXIT_FAILED = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad arguments as a `failed` event too, so the caller always gets a last event."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        reporter = JsonLinesReporter(sys.stdout)
        Progress(reporter, job_id="", total_epochs=0).enter(STAGE_FAILED, error=f"vft train: {message}")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vft train",
        description="Fine-tune a Qwen3-TTS voice from a dataset zip; progress as JSON lines on stdout.",
    )
    parser.add_argument(
        "--job-id", required=True, help="job id: names the job folder and checkpoints/{job_id} on S3"
    )
    parser.add_argument(
        "--dataset", required=True, help="S3 key (or s3://bucket/key) or local path of the dataset zip"
    )
    parser.add_argument(
        "--speaker-name", required=True, help="name of the new voice (no '_' followed by a digit)"
    )
    parser.add_argument("--num-epochs", type=int, default=DEFAULT_NUM_EPOCHS)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--lr", type=float, default=DEFAULT_LR)
    parser.add_argument(
        "--gradient-accumulation-steps",
        type=int,
        default=DEFAULT_GRADIENT_ACCUMULATION_STEPS,
        help="batches whose gradients add up to one optimizer step (effective batch: batch size × this)",
    )
    parser.add_argument(
        "--language",
        default=DEFAULT_LANGUAGE,
        help="language of the dataset's speech (a train.jsonl line's own 'language' wins); Auto: auto layout only",
    )
    parser.add_argument(
        "--method",
        choices=("full", "lora"),
        default=DEFAULT_METHOD,
        help="full: every weight trains; lora: low-rank adapters (a small voice on a shared base model)",
    )
    parser.add_argument("--lora-rank", type=int, default=DEFAULT_LORA_RANK)
    parser.add_argument("--lora-alpha", type=int, help="default: 2 × --lora-rank")
    parser.add_argument(
        "--lora-targets", type=_lora_targets, help="comma-separated projections (default: all of them)"
    )
    parser.add_argument("--resume-from", help="checkpoint to continue from: local folder or S3 prefix")
    parser.add_argument("--base-model", help="base checkpoint (folder or hub id); default VFT_BASE_MODEL")
    parser.add_argument("--output-dir", type=Path, help="where checkpoints go; default {job folder}/output")
    parser.add_argument("--progress-url", help="also POST each event here as JSON (default VFT_PROGRESS_URL)")
    return parser


def _lora_targets(text: str) -> tuple[str, ...]:
    try:
        return tuple(check_lora_targets(text) or ())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


@contextlib.contextmanager
def stdout_for_events() -> Iterator[IO[str]]:
    """A stream onto the real stdout for events, while everything else written to stdout goes to stderr.

    The file descriptor itself is redirected, so prints from C extensions and libraries cannot slip into the
    event stream either.
    """
    try:
        is_process_stdout = sys.stdout.fileno() == 1
    except (AttributeError, OSError, ValueError):
        is_process_stdout = False
    if not is_process_stdout:  # e.g. called in-process under a test's capture
        events = sys.stdout
        with contextlib.redirect_stdout(sys.stderr):
            yield events
        return
    sys.stdout.flush()
    saved = os.dup(1)
    events = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield events
    finally:
        events.close()
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def build_reporter(events: IO[str], settings: Settings, progress_url: str | None) -> Reporter:
    reporters: list[Reporter] = [JsonLinesReporter(events)]
    url = progress_url or settings.progress_url
    if url:
        reporters.append(HttpReporter(url, token=settings.progress_token))
    return FanOutReporter(reporters)


def _raise_interrupted(signum: int, _frame) -> None:
    raise JobInterrupted(
        f"stopped by {signal.Signals(signum).name} (cancelled, or the pod was deleted); "
        "the epochs finished so far stay in the output folder: run again with --resume-from to continue"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = Settings.from_env()
    request = TrainRequest(
        job_id=args.job_id,
        dataset=args.dataset,
        speaker_name=args.speaker_name,
        num_epochs=args.num_epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        resume_from=args.resume_from,
        base_model=args.base_model,
        output_dir=args.output_dir,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        language=args.language,
        method=args.method,
        lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha,
        lora_targets=args.lora_targets,
    )
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_interrupted) if in_main_thread else None
    try:
        with stdout_for_events() as events:
            reporter = build_reporter(events, settings, args.progress_url)
            try:
                last = run_training(request, settings=settings, reporter=reporter)
            finally:
                reporter.close()
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    return 0 if last["stage"] != STAGE_FAILED else EXIT_FAILED
