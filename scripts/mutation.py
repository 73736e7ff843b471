"""`make mutation`: mutmut over the safety-critical modules, each against its own fast tests; the score table goes
into docs/testing.md.

Each module runs in a scratch copy of the committed tree (``git archive HEAD``) with every package at its top (the
core and the parts' own distributions such as inference_server/voicefinetune_inference), so the checkout is never
touched. Modules with more mutants than ``--sample`` are sampled (a fixed, seeded
choice) and the table says so. The score leaves out the equivalent mutants listed in EQUIVALENT (with their reason).

    .venv/bin/python scripts/mutation.py [--module NAME ...] [--sample N] [--jobs N] [--no-write] [--report-only]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "testing.md"
MUTMUT = Path(sys.executable).with_name("mutmut")
BEGIN, END = "<!-- mutation:begin -->", "<!-- mutation:end -->"
TARGET_SCORE = 85.0
KILLED = ("killed", "timeout")  # a mutant that makes the tests hang is caught too (mutmut's own timeout)


@dataclass(frozen=True)
class Module:
    name: str
    source: str  # path inside the package copy (the symlinked parts appear under voicefinetune/)
    tests: tuple[str, ...]
    sample: int | None = None  # at most this many mutants (slow tests), below the run's --sample


OPTIMIZER_TESTS = tuple(
    f"tests/trainer/test_compact_training.py::{name}"
    for name in (
        "test_with_fp32_state_and_weights_it_is_torch_adamw",
        "test_bf16_moments_stay_close_to_fp32_moments",
        "test_bf16_weights_keep_updates_far_below_a_bf16_step",
        "test_resume_state_has_the_moments_but_not_the_weight_extension",
        "test_a_resumed_optimizer_keeps_bf16_moments_and_steps_as_if_it_never_stopped",
        "test_stochastic_rounding_is_unbiased_between_bf16_neighbours",
        "test_the_bf16_second_moment_keeps_decaying_over_a_long_run",
        "test_tensors_joined_into_chunks_update_as_they_would_one_at_a_time",
        "test_small_tensors_share_the_operations_of_one_step",
    )
)
MODULES = (
    Module(
        "dataset",
        "voicefinetune/dataset.py",
        (
            "tests/trainer/test_dataset.py",
            "tests/trainer/test_dataset_audio_caps.py",
            "tests/trainer/test_dataset_cli.py",
        ),
    ),
    Module(
        "zip checks",
        "voicefinetune/zipsafe.py",
        ("tests/trainer/test_zipsafe.py", "tests/trainer/test_dataset.py"),
    ),
    Module("body limit", "voicefinetune/bodylimit.py", ("tests/core/test_body_limit.py",)),
    Module("API key", "voicefinetune/security.py", ("tests/core/test_api_key_middleware.py",)),
    Module(
        "SSRF guard",
        "voicefinetune_inference/audio/reference.py",
        (
            "tests/inference/audio/test_ref_audio_unit.py",
            "tests/inference/audio/test_ssrf_wrapped_addresses.py",
            "tests/inference/audio/test_ref_audio_fetch.py",
            "tests/inference/audio/test_ref_audio_tls_and_dns.py",
        ),
    ),
    Module(
        "URL safety",
        "voicefinetune/url_safety.py",
        (
            "tests/core/test_url_safety.py",
            "tests/inference/audio/test_ref_audio_unit.py",
            "tests/inference/audio/test_ssrf_wrapped_addresses.py",
            "tests/inference/audio/test_ref_audio_tls_and_dns.py",
            "tests/chapters/test_chapter_units.py",
        ),
    ),
    Module(
        "model cache",
        "voicefinetune_inference/caches/model_cache.py",
        (
            "tests/inference/caches/test_model_cache_unit.py",
            "tests/inference/caches/test_model_cache_discard.py",
        ),
    ),
    Module(
        "disk cache",
        "voicefinetune_inference/caches/disk_cache.py",
        ("tests/inference/caches/test_disk_lru.py", "tests/inference/caches/test_disk_cache_report.py"),
    ),
    Module("optimizer", "voicefinetune_trainer/optim.py", OPTIMIZER_TESTS),
    Module(
        "sampling",
        "voicefinetune_inference/engine/sampling.py",
        ("tests/inference/engine/test_fast_sampling.py",),
    ),
    Module(
        "decode loop",
        "voicefinetune_inference/engine/decode.py",
        (
            "tests/inference/engine/test_fast_engine.py::test_rows_stop_at_their_own_bound_and_the_others_are_unchanged",
            "tests/inference/engine/test_fast_engine.py::test_greedy_codes_equal_upstream",
            "tests/inference/engine/test_early_results.py::test_a_short_row_is_delivered_while_the_long_one_still_runs",
        ),
        sample=8,
    ),
    Module("operator status", "voicefinetune_operator/status.py", ("tests/operator/test_status_rules.py",)),
)

ASGI_SCOPE = "an ASGI HTTP scope always carries 'path' and 'headers': the default is never used"
RATIO_FLOOR = (
    "the floor only matters for 0 or 1 compressed bytes, which nothing at or above the 1 MiB ratio threshold "
    "compresses to (deflate needs about 1 KB for 1 MiB of zeros)"
)
# Mutants no test can tell apart from the original, by module: (function, text of the mutated line) -> reason.
# Matched on the mutated line rather than mutmut's numbering, so an edit to the function cannot misfile them.
EQUIVALENT: dict[str, dict[tuple[str, str], str]] = {
    "zip checks": {
        (
            "directory_totals",
            'locator = tail[at - 20 : at] if at >= 20 else b"XXXX"',
        ): "any bytes that do not start with the zip64 locator's signature read as 'no locator', as b'' does",
        (
            "check_archive",
            'f"the zip expands {total / max(compressed, 2):.0f}x; the limit is {limits.max_ratio:.0f}x: "',
        ): RATIO_FLOOR,
        (
            "check_archive",
            "if total >= RATIO_CHECK_MIN_BYTES and total > limits.max_ratio * max(compressed, 2):",
        ): RATIO_FLOOR,
        (
            "check_archive",
            "if info.file_size >= RATIO_CHECK_MIN_BYTES and info.file_size > limits.max_ratio * max(info.compress_size, 2):",
        ): RATIO_FLOOR,
        (
            "check_archive",
            'f"zip member {info.filename!r} expands {info.file_size / max(info.compress_size, 2):.0f}x "',
        ): RATIO_FLOOR,
    },
    "API key": {
        (
            "__call__",
            'if scope["type"] != "http" or not self.keys or scope.get("path", "XXXX") in self.open_paths:',
        ): ASGI_SCOPE,
        ("__call__", 'if key_matches(presented_key(scope.get("headers", None)), self.keys):'): ASGI_SCOPE,
        ("__call__", 'if key_matches(presented_key(scope.get("headers", )), self.keys):'): ASGI_SCOPE,
        (
            "__call__",
            'if scope["type"] != "http" or not self.keys or self.is_open(scope.get("path", "XXXX")):',
        ): ASGI_SCOPE,
        (
            "__call__",
            'if scope["type"] != "http" or not self.keys or self.is_open(scope.get("path", )):',
        ): ASGI_SCOPE,
        ("__call__", 'await send_json(send, 401, unauthorized_body(scope.get("path", )),'): ASGI_SCOPE,
    },
    "SSRF guard": {
        (
            "fetch_url",
            '"GET", _pinned_url(parts, address), headers={"HOST": host_header}, extensions=extensions',
        ): "HTTP header names are case-insensitive: httpx sends the same Host header",
        (
            "fetch_url",
            "follow_redirects=None, trust_env=False, timeout=FETCH_TIMEOUT_SECONDS",
        ): "httpx only tests follow_redirects for truth: None follows no redirect, as False does",
        (
            "fetch_url",
            'extensions = {"sni_hostname": parts.hostname} if (parts.scheme == "https") or True else {}',
        ): "httpcore reads sni_hostname only when it starts TLS: a plain-http request ignores it",
    },
    "URL safety": {
        (
            "resolve_checked",
            'addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 2)[0]) for info in infos]',
        ): "element [0] of a split is the text before the first '%' whatever the split count",
        (
            "resolve_checked",
            "infos = await asyncio.get_running_loop().getaddrinfo(host, port, )",
        ): "without a socket type getaddrinfo lists each address once per type (stream, datagram, raw): the same "
        "addresses in the same order, so the same checks and the same first address",
    },
    "body limit": {
        ("__call__", 'headers = dict(scope.get("headers", ))'): ASGI_SCOPE,
    },
    "sampling": {
        (
            "suppression_mask",
            "mask[torch.tensor(ids, dtype=torch.long, )] = True",
        ): "indexing a tensor with a CPU index tensor moves the index to the tensor's device: the same mask",
    },
    "dataset": {
        (
            "open_dataset",
            "shutil.rmtree(dest, )",
        ): "dest is the folder this call has just extracted, so removing it cannot fail and ignore_errors never acts",
        (
            "seconds",
            'reason = str(exc).split(": ", 1)[-1] if (str(exc)) or True else type(exc).__name__',
        ): "soundfile raises its errors with libsndfile's message, never an empty one, so the fallback never acts",
    },
}


# Survivors with a word on them (killed by a test outside the module's fast list, or by one added after the run).
SURVIVOR_NOTES: dict[str, dict[tuple[str, str], str]] = {
    "dataset": {
        (
            "_decode",
            "rel = None",
        ): "killed by test_streaming_encode.py (a clip that fails to decode at load time)",
        (
            "resolve",
            'if posix.startswith("/") or (len(posix) >= 1 and posix[1] == ":"):',
        ): "killed since by test_a_one_character_path_is_a_file_name_and_a_drive_letter_is_absolute",
    },
    "decode loop": {
        (
            "step",
            "step_mask(layers[0].self_attn, self.mask[:, : position + 1], None)",
        ): "killed by test_attention_masks.py::test_eager_attention_codes_equal_sdpa (only eager attention uses the "
        "dtype, for its additive mask; the listed tests run SDPA)",
    },
}


@dataclass
class Outcome:
    module: Module
    total: int = 0
    sampled: int = 0
    statuses: dict[str, str] = field(default_factory=dict)  # mutant -> killed / survived / timeout / ...
    equivalent: dict[str, str] = field(default_factory=dict)  # mutant -> reason
    notes: dict[str, str] = field(default_factory=dict)  # surviving mutant -> note
    diffs: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(1 for name, s in self.statuses.items() if s == status and name not in self.equivalent)

    @property
    def score(self) -> float | None:
        scored = [s for n, s in self.statuses.items() if n not in self.equivalent]
        return None if not scored else 100.0 * sum(s in KILLED for s in scored) / len(scored)


def export_head(scratch: Path) -> Path:
    """The committed tree (HEAD), so that a run measures what is committed, whatever the working tree holds."""
    tree = scratch / "_head"
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def packages(tree: Path) -> dict[str, Path]:
    """The importable packages of the checkout: the core and each part's own distribution (e.g.
    inference_server/voicefinetune_inference), by import name."""
    found = {"voicefinetune": tree / "voicefinetune"}
    found.update({init.parent.name: init.parent for init in tree.glob("*/voicefinetune_*/__init__.py")})
    return found


def prepare(module: Module, work: Path, tree: Path) -> None:
    """``work`` gets every package at its top (mutmut mutates the one holding ``module.source``) and the tests;
    mutants/ gets a copy too: mutmut puts it first on sys.path, but a start-up hook of the venv
    (voicefinetune_torchaudio.pth) imports voicefinetune before, so PYTHONPATH (see mutmut()) must find it there."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name, folder in packages(tree).items():
        shutil.copytree(folder, work / name, symlinks=False, ignore=ignore)
        shutil.copytree(folder, work / "mutants" / name, symlinks=False, ignore=ignore)
    shutil.copytree(tree / "tests", work / "tests", ignore=ignore)
    config = {
        "source_paths": [module.source.split("/")[0]],
        "only_mutate": [module.source],
        "pytest_add_cli_args_test_selection": list(module.tests),
        # make test's 60 s per test guards CI; a mutation run shares the cores with its own parallel children,
        # and mutmut times out a hanging mutant itself (from the unmutated run's durations)
        "pytest_add_cli_args": ["-p", "no:cacheprovider", "--timeout", "600"],
        "use_git_change_detection": False,
        "process_isolation": "forkserver",
    }
    lines = ["", "[tool.mutmut]"] + [f"{key} = {json.dumps(value)}" for key, value in config.items()]
    (work / "pyproject.toml").write_text((tree / "pyproject.toml").read_text() + "\n".join(lines) + "\n")


def mutmut(work: Path, *args: str, check: bool = True) -> str:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(work / "mutants")}
    result = subprocess.run([str(MUTMUT), *args], cwd=work, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(
            f"mutmut {' '.join(args)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result.stdout


def statuses(work: Path) -> dict[str, str]:
    found = {}
    for line in mutmut(work, "results", "--all", "true").splitlines():
        match = re.match(r"\s+(\S+): (.+)$", line)
        if match:
            found[match.group(1)] = match.group(2).strip()
    return found


def mutated_line(diff: str) -> str:
    added = [
        line[1:].strip() for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")
    ]
    return added[0] if added else ""


def run_module(
    module: Module,
    scratch: Path,
    sample: int,
    jobs: int,
    seed: int,
    report_only: bool = False,
    tree: Path | None = None,
) -> Outcome:
    started = time.monotonic()
    work = scratch / re.sub(r"\W+", "_", module.name)
    if report_only:
        if not (work / "mutants").is_dir():
            return Outcome(module)  # never run: a row that says so
        return classify(
            module, work, sorted(statuses(work)), [n for n, s in statuses(work).items() if s != "not checked"]
        )
    prepare(module, work, tree)
    # A run that matches no mutant generates them all and collects which tests cover which function, then stops:
    # the mutant names to sample from.
    mutmut(work, "run", "--max-children", str(jobs), "__list_only__", check=False)
    every = sorted(statuses(work))
    if not every:
        raise RuntimeError(f"{module.name}: mutmut generated no mutants (see {work})")
    if module.sample is not None:
        sample = min(sample, module.sample) if sample else module.sample
    chosen = sorted(random.Random(seed).sample(every, sample)) if 0 < sample < len(every) else every
    mutmut(work, "run", "--max-children", str(jobs), *chosen)
    outcome = classify(module, work, every, chosen)
    outcome.seconds = time.monotonic() - started
    return outcome


def classify(module: Module, work: Path, every: list[str], chosen: list[str]) -> Outcome:
    """The outcome of the mutants run in ``work``, with the equivalent ones recognised from their diffs."""
    outcome = Outcome(module, total=len(every), sampled=len(chosen))
    outcome.statuses = {name: status for name, status in statuses(work).items() if name in chosen}
    known = EQUIVALENT.get(module.name, {})
    for name, status in outcome.statuses.items():
        if status == "killed":
            continue
        diff = mutmut(work, "show", name)
        outcome.diffs[name] = diff
        function = name.rsplit(".", 1)[-1].split("__mutmut_")[0].removeprefix("x_").removeprefix("xǁ")
        for (where, text), reason in known.items():
            if where in function and text == mutated_line(diff):
                outcome.equivalent[name] = reason
        for (where, text), note in SURVIVOR_NOTES.get(module.name, {}).items():
            if where in function and text == mutated_line(diff):
                outcome.notes[name] = note
    return outcome


def table(outcomes: list[Outcome], note: str) -> str:
    rows = [
        "| module | tests | mutants run | killed | timeouts | survived | no tests | equivalent | score |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        score = "not run" if o.total == 0 else "n/a" if o.score is None else f"{o.score:.0f} %"
        run = f"{o.sampled} of {o.total}" if o.sampled < o.total else str(o.total)
        tests = ", ".join(f"`{Path(t).name}`" for t in o.module.tests)
        rows.append(
            f"| `{o.module.source.removeprefix('voicefinetune/')}` ({o.module.name}) | {tests} | {run} | "
            f"{o.count('killed')} | {o.count('timeout')} | {o.count('survived')} | {o.count('no tests')} | "
            f"{len(o.equivalent)} | {score} |"
        )
    parts = [note, "", *rows, ""]
    equivalents = [(o, n) for o in outcomes for n in sorted(o.equivalent)]
    if equivalents:
        parts += ["Equivalent mutants (left out of the score):", ""]
        parts += [f"- `{n}` (`{mutated_line(o.diffs[n])}`): {o.equivalent[n]}" for o, n in equivalents]
        parts.append("")
    survivors = [
        (o, n)
        for o in outcomes
        for n, s in sorted(o.statuses.items())
        if s not in KILLED and n not in o.equivalent
    ]
    if survivors:
        parts += ["Mutants not killed:", ""]
        parts += [
            f"- `{n}` ({o.statuses[n]}): `{mutated_line(o.diffs.get(n, ''))}`"
            + (f": {o.notes[n]}" if n in o.notes else "")
            for o, n in survivors
        ]
        parts.append("")
    return "\n".join(parts)


def write_doc(section: str) -> None:
    text = DOC.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    DOC.write_text(text[:start] + "\n" + section + text[end:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", action="append", help="only these modules (by name); default: all")
    parser.add_argument("--sample", type=int, default=10, help="mutants per module at most (0: all)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-write", action="store_true", help="print the table, leave docs/testing.md alone"
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: classify the mutants of the last run in --scratch again (after EQUIVALENT changed)",
    )
    parser.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()) / "vft-mutation")
    args = parser.parse_args()
    modules = [m for m in MODULES if not args.module or m.name in args.module]
    outcomes = []
    tree = None if args.report_only else export_head(args.scratch)
    for module in modules:
        outcome = run_module(module, args.scratch, args.sample, args.jobs, args.seed, args.report_only, tree)
        outcomes.append(outcome)
        print(
            f"{module.name}: score {outcome.score}, {outcome.sampled}/{outcome.total} mutants, "
            f"{outcome.seconds:.0f} s",
            flush=True,
        )
    sampled = any(o.sampled < o.total for o in outcomes)
    note = (
        f"From `make mutation` (mutmut, {time.strftime('%Y-%m-%d')}): each module against only the tests "
        "listed. "
        + (f"Mutants are sampled (seed {args.seed}): the table says how many ran. " if sampled else "")
        + 'Score = (killed + timeouts) / (all run - equivalent); a mutant no listed test runs ("no tests") counts '
        "as not killed."
    )
    section = table(outcomes, note)
    print(section)
    if not args.no_write:
        write_doc(section)
    low = [o.module.name for o in outcomes if o.score is not None and o.score < TARGET_SCORE]
    if low:
        print(f"below {TARGET_SCORE:.0f} %: {', '.join(low)}", file=sys.stderr)
    return 1 if low else 0


if __name__ == "__main__":
    sys.exit(main())
