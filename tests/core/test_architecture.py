"""The shape of the house: imports run one way, no module grows past 400 lines, the checkout does not shadow the
standard library, and facts written once stay in step where another part has to mirror them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCE_DIRS = ("voicefinetune", "operator/src", "inference_server/src", "trainer_image/src")
MAX_LINES = 400


def source_files() -> list[Path]:
    files = []
    for folder in SOURCE_DIRS:
        # voicefinetune/<part> are links to the parts' folders: walk the real folders once each.
        files += [path for path in (REPO / folder).rglob("*.py") if not any(p.is_symlink() for p in path.parents)]
    return sorted(set(files))


def test_every_source_module_is_at_most_400_lines():
    long = {str(p.relative_to(REPO)): n for p in source_files() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_no_module_of_the_facade_imports_the_operator_or_the_other_parts():
    import grimp  # import-linter's import graph

    graph = grimp.build_graph("voicefinetune")
    for part in ("operator", "inference_server", "trainer", "devtools"):
        imports = graph.find_matching_direct_imports(
            import_expression=f"voicefinetune.facade.** -> voicefinetune.{part}.**"
        ) + graph.find_matching_direct_imports(import_expression=f"voicefinetune.facade.** -> voicefinetune.{part}")
        assert not imports, imports


def test_the_checkout_root_does_not_shadow_the_standard_library():
    # -S: no site start-up (no .pth hooks), the checkout's root first on sys.path, as for any script run there.
    result = subprocess.run([sys.executable, "-S", "-c", "import collections, socket, operator; print(operator.eq)"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "built-in function eq" in result.stdout


def test_import_contracts_hold():
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint_imports), "--no-cache"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    kept = [line for line in result.stdout.splitlines() if line.rstrip().endswith("KEPT")]
    assert len(kept) >= 3, result.stdout


def test_the_proxy_forwards_every_inference_route_the_facade_does_not_serve_itself(tmp_path):
    from voicefinetune.facade.inference_proxy import ROUTES
    from voicefinetune.inference_server.api import build_router
    from voicefinetune.inference_server.service import InferenceService
    from voicefinetune.opslog import OpsLog
    from voicefinetune.settings import Settings
    from voicefinetune.storage import Storage

    settings = Settings(data_dir=tmp_path)
    router = build_router(InferenceService(settings, Storage(settings), OpsLog(tmp_path / "ops.jsonl")))
    served = {(method, route.path) for route in router.routes for method in route.methods}
    # The voice registry is the operator's, called on each replica directly; /metrics is per process.
    own = {(m, p) for m, p in served if p.startswith("/voices") or p == "/metrics"}
    assert {(method, path) for method, path, _ in ROUTES} == served - own


def test_vft_train_defaults_are_the_api_defaults():
    from voicefinetune.trainer.cli import build_parser

    args = build_parser().parse_args(["--job-id", "j", "--dataset", "d.zip", "--speaker-name", "Hero"])
    # The upstream service's documented defaults: 15 epochs, batch 2, lr 1e-6.
    assert (args.num_epochs, args.batch_size, args.lr) == (15, 2, 1e-6)


def test_lifecycle_spellings_line_up():
    from voicefinetune.lifecycle import PHASES, PROGRESS_CAMEL, SPEC_FIELDS

    assert PHASES == ("Queued", "Preparing", "Training", "Loading", "Ready", "Failed")
    assert PROGRESS_CAMEL == {"stage": "stage", "epoch": "epoch", "total_epochs": "totalEpochs", "step": "step",
                              "loss": "loss", "global_step": "globalStep"}
    assert SPEC_FIELDS == {"datasetS3Key": "dataset_s3_key", "speakerName": "speaker_name", "numEpochs": "num_epochs",
                           "batchSize": "batch_size", "lr": "lr", "bookId": "book_id", "chapterId": "chapter_id",
                           "characterId": "character_id", "resumeJobId": "resume_job_id",
                           "gradientAccumulationSteps": "gradient_accumulation_steps", "language": "language"}
