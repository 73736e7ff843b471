"""What one `vft train` run is asked to do, and its command line as other parts build it (the local backend's
child process, the Kubernetes Job's container).

Kept free of heavy imports: the operator and the facade images have no torch.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .lifecycle import DEFAULTS
from .schemas import FinetuneRequest


@dataclass(frozen=True)
class TrainRequest:
    job_id: str
    dataset: str
    speaker_name: str
    num_epochs: int
    batch_size: int
    lr: float
    resume_from: str | None = None
    base_model: str | None = None
    output_dir: Path | None = None
    gradient_accumulation_steps: int = DEFAULTS["gradient_accumulation_steps"]
    language: str = DEFAULTS["language"]
    method: str = DEFAULTS["method"]
    lora_rank: int = DEFAULTS["lora_rank"]
    lora_alpha: int | None = None  # None: 2 × lora_rank
    lora_targets: tuple[str, ...] | None = None  # None: every projection of schemas.LORA_TARGETS

    def arguments(self, progress_url: str | None = None) -> list[str]:
        """The arguments after `vft train` (see `voicefinetune_trainer.cli.build_parser`)."""
        args = [
            "--job-id",
            self.job_id,
            "--dataset",
            self.dataset,
            "--speaker-name",
            self.speaker_name,
            "--num-epochs",
            str(self.num_epochs),
            "--batch-size",
            str(self.batch_size),
            "--lr",
            repr(self.lr),
            "--gradient-accumulation-steps",
            str(self.gradient_accumulation_steps),
            "--language",
            self.language,
            "--method",
            self.method,
            "--lora-rank",
            str(self.lora_rank),
        ]
        optional = {
            "--resume-from": self.resume_from,
            "--base-model": self.base_model,
            "--output-dir": None if self.output_dir is None else str(self.output_dir),
            "--progress-url": progress_url,
            "--lora-alpha": None if self.lora_alpha is None else str(self.lora_alpha),
            "--lora-targets": ",".join(self.lora_targets) if self.lora_targets else None,
        }
        for flag, value in optional.items():
            if value:
                args += [flag, value]
        return args

    def local_command(self) -> list[str]:
        """`vft train ...` with this interpreter (no dependence on PATH)."""
        return [sys.executable, "-m", "voicefinetune.cli", "train", *self.arguments()]


def method_fields(request: FinetuneRequest) -> dict[str, Any]:
    """A /finetune body's training method and LoRA settings as `TrainRequest` fields."""
    return {
        "method": request.method,
        "lora_rank": request.lora_rank,
        "lora_alpha": request.lora_alpha,
        "lora_targets": tuple(request.lora_targets) if request.lora_targets else None,
    }
