"""The trainer's checkpoint folders and ids, as the inference server and a resumed run read them: both parts agree."""

import io

import pytest
from voicefinetune_inference.caches.checkpoints import CheckpointLocator
from voicefinetune_inference.caches.voices import check_voice_id
from voicefinetune_trainer.pipeline import TrainingPipeline, check_request
from voicefinetune_trainer.reporter import JsonLinesReporter

from voicefinetune.schemas import InvalidInput
from voicefinetune.settings import Settings
from voicefinetune.storage import Storage
from voicefinetune.train_request import TrainRequest


def _request(job_id: str, resume_from: str | None = None) -> TrainRequest:
    return TrainRequest(
        job_id=job_id,
        dataset="x.zip",
        speaker_name="Hero",
        num_epochs=1,
        batch_size=1,
        lr=0.1,
        resume_from=resume_from,
    )


def test_the_inference_server_and_a_resumed_run_take_the_trainers_newest_checkpoint(tmp_path):
    settings = Settings.from_env({"VFT_DATA_DIR": str(tmp_path)})
    trainer = TrainingPipeline(_request("voice-1"), settings, JsonLinesReporter(io.StringIO()))
    for epoch in (2, 9, 10):
        (trainer.output_dir / f"checkpoint-epoch-{epoch}").mkdir(parents=True)
        (trainer.output_dir / f"checkpoint-epoch-{epoch}" / "config.json").write_text("{}")
    (trainer.output_dir / "checkpoint-epoch-11").mkdir()  # an interrupted write: no config.json
    (trainer.output_dir / "checkpoint-epoch-99.tmp").mkdir()
    (trainer.output_dir / "checkpoint-epoch-99.tmp" / "config.json").write_text("{}")
    newest = tmp_path / "jobs" / "voice-1" / "output" / "checkpoint-epoch-10"

    served = CheckpointLocator(settings, Storage(settings)).trainer_checkpoint("voice-1")
    resumed = TrainingPipeline(
        _request("voice-2", resume_from="voice-1"), settings, JsonLinesReporter(io.StringIO())
    )

    assert served == (str(newest.absolute()), None)
    assert resumed._resume_folder("voice-1") == newest


@pytest.mark.parametrize(
    ("job_id", "accepted"),
    [
        ("a", True),
        ("job-1", True),
        ("team-a.voice_1", True),
        ("A" * 128, True),
        ("A" * 129, False),
        ("a..b", False),
        (".a", False),
        ("-a", False),
        ("a/b", False),
        ("", False),
    ],
)
def test_the_trainer_and_the_inference_server_accept_the_same_job_ids(job_id, accepted):
    def accepts(check) -> bool:
        try:
            check(job_id)
        except InvalidInput:
            return False
        return True

    assert accepts(lambda value: check_request(_request(value))) is accepted
    assert accepts(check_voice_id) is accepted
