"""The shape of the house: one distribution per part with no symbolic links, no import circle anywhere, the checkout
does not shadow the standard library, and facts written once stay in step where another part has to mirror them.
The layers themselves are import-linter's contracts (pyproject.toml), checked by `make lint`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("voicefinetune", "voicefinetune_operator", "voicefinetune_inference", "voicefinetune_trainer")


def test_the_tree_holds_no_symbolic_link():
    ignored = {".git", ".venv"}
    links = [
        str(path.relative_to(REPO))
        for path in REPO.rglob("*")
        if path.is_symlink() and not ignored & set(path.relative_to(REPO).parts)
    ]
    assert links == []


def import_circles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), over every import the source makes,
    including those inside functions."""
    modules = sorted(graph.modules)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    counter = 0

    def visit(start: str) -> None:
        nonlocal counter
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            module, children = work[-1]
            for child in children:
                if child not in graph.modules:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                    break
                if child in on_stack:
                    low[module] = min(low[module], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[module])
                if low[module] == index[module]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == module:
                            break
                    if len(component) > 1:
                        circles.append(sorted(component))

    for module in modules:
        if module not in index:
            visit(module)
    return circles


def test_no_import_circle_between_modules_anywhere_in_the_source():
    import grimp  # import-linter's import graph

    graph = grimp.build_graph(*PACKAGES)
    assert import_circles(graph) == []


def test_the_circle_finder_finds_a_circle():
    import grimp

    graph = grimp.ImportGraph()
    for module in ("pkg", "pkg.a", "pkg.b", "pkg.c"):
        graph.add_module(module)
    graph.add_import(importer="pkg.a", imported="pkg.b")
    graph.add_import(importer="pkg.b", imported="pkg.a")
    graph.add_import(importer="pkg.c", imported="pkg.a")
    assert import_circles(graph) == [["pkg.a", "pkg.b"]]


def test_the_checkout_root_does_not_shadow_the_standard_library():
    # -S: no site start-up (no .pth hooks), the checkout's root first on sys.path, as for any script run there.
    result = subprocess.run(
        [sys.executable, "-S", "-c", "import collections, socket, operator; print(operator.eq)"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "built-in function eq" in result.stdout


def test_the_proxy_forwards_every_inference_route_the_facade_does_not_serve_itself(tmp_path):
    from voicefinetune_inference.routes import build_router
    from voicefinetune_inference.serving.service import InferenceService

    from voicefinetune.facade.inference_proxy import ROUTES
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
    from voicefinetune_trainer.cli import build_parser

    args = build_parser().parse_args(["--job-id", "j", "--dataset", "d.zip", "--speaker-name", "Hero"])
    # The upstream service's documented defaults: 15 epochs, batch 2, lr 1e-6.
    assert (args.num_epochs, args.batch_size, args.lr) == (15, 2, 1e-6)


def test_lifecycle_spellings_line_up():
    from voicefinetune.lifecycle import PHASES, PROGRESS_CAMEL, SPEC_FIELDS

    assert PHASES == ("Queued", "Preparing", "Training", "Loading", "Ready", "Failed")
    assert PROGRESS_CAMEL == {
        "stage": "stage",
        "epoch": "epoch",
        "total_epochs": "totalEpochs",
        "step": "step",
        "loss": "loss",
        "global_step": "globalStep",
    }
    assert SPEC_FIELDS == {
        "datasetS3Key": "dataset_s3_key",
        "speakerName": "speaker_name",
        "numEpochs": "num_epochs",
        "batchSize": "batch_size",
        "lr": "lr",
        "bookId": "book_id",
        "chapterId": "chapter_id",
        "characterId": "character_id",
        "resumeJobId": "resume_job_id",
        "gradientAccumulationSteps": "gradient_accumulation_steps",
        "language": "language",
        "method": "method",
        "loraRank": "lora_rank",
        "loraAlpha": "lora_alpha",
        "loraTargets": "lora_targets",
        "webhookUrl": "webhook_url",
    }
