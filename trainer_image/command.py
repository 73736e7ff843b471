"""The `vft train` command line as other parts build it (the local backend's child process, the Job's container).

Kept free of heavy imports: the operator and the facade images have no torch.
"""

from __future__ import annotations

from pathlib import Path


def train_arguments(
    *,
    job_id: str,
    dataset: str,
    speaker_name: str,
    num_epochs: int,
    batch_size: int,
    lr: float,
    resume_from: str | None = None,
    base_model: str | None = None,
    output_dir: Path | None = None,
    progress_url: str | None = None,
) -> list[str]:
    """The arguments after `vft train` (see `voicefinetune.trainer.cli.build_parser`)."""
    args = [
        "--job-id", job_id,
        "--dataset", dataset,
        "--speaker-name", speaker_name,
        "--num-epochs", str(num_epochs),
        "--batch-size", str(batch_size),
        "--lr", repr(lr),
    ]
    optional = {
        "--resume-from": resume_from,
        "--base-model": base_model,
        "--output-dir": None if output_dir is None else str(output_dir),
        "--progress-url": progress_url,
    }
    for flag, value in optional.items():
        if value:
            args += [flag, value]
    return args
