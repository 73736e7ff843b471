from pathlib import Path

from voicefinetune_trainer.cli import build_parser

from voicefinetune.train_request import TrainRequest


def test_arguments_round_trip_through_the_trainer_parser():
    request = TrainRequest(
        job_id="j1",
        dataset="datasets/x.zip",
        speaker_name="Hero",
        num_epochs=3,
        batch_size=2,
        lr=1e-6,
        resume_from="checkpoints/j0",
        base_model="/models/base",
        output_dir=Path("/tmp/out"),
        gradient_accumulation_steps=4,
        language="German",
    )
    args = build_parser().parse_args(request.arguments(progress_url="http://op:8081/progress/ns/j1"))
    assert (args.job_id, args.dataset, args.speaker_name) == ("j1", "datasets/x.zip", "Hero")
    assert (args.num_epochs, args.batch_size, args.lr) == (3, 2, 1e-6)
    assert (args.resume_from, args.base_model, args.output_dir) == (
        "checkpoints/j0",
        "/models/base",
        Path("/tmp/out"),
    )
    assert args.progress_url == "http://op:8081/progress/ns/j1"
    assert (args.gradient_accumulation_steps, args.language) == (4, "German")


def test_new_fields_default_to_the_api_defaults():
    args = build_parser().parse_args(["--job-id", "j", "--dataset", "d.zip", "--speaker-name", "Hero"])
    assert (args.gradient_accumulation_steps, args.language) == (1, "English")
    arguments = TrainRequest("j1", "d.zip", "Hero", 1, 1, 0.5).arguments()
    assert arguments[arguments.index("--gradient-accumulation-steps") + 1] == "1"
    assert arguments[arguments.index("--language") + 1] == "English"


def test_optional_arguments_are_left_out_when_unset():
    arguments = TrainRequest("j1", "d.zip", "Hero", 1, 1, 0.5).arguments()
    assert not [
        a for a in arguments if a in {"--resume-from", "--base-model", "--output-dir", "--progress-url"}
    ]
    assert TrainRequest("j1", "d.zip", "Hero", 1, 1, 0.5).local_command()[-len(arguments) :] == arguments


def test_lora_arguments_round_trip_through_the_trainer_parser():
    request = TrainRequest(
        "j1",
        "d.zip",
        "Hero",
        1,
        1,
        0.5,
        method="lora",
        lora_rank=8,
        lora_alpha=4,
        lora_targets=("q_proj", "up_proj"),
    )
    args = build_parser().parse_args(request.arguments())
    assert (args.method, args.lora_rank, args.lora_alpha, args.lora_targets) == (
        "lora",
        8,
        4,
        ("q_proj", "up_proj"),
    )
    defaults = build_parser().parse_args(["--job-id", "j", "--dataset", "d.zip", "--speaker-name", "Hero"])
    assert (defaults.method, defaults.lora_rank, defaults.lora_alpha, defaults.lora_targets) == (
        "full",
        16,
        None,
        None,
    )
