"""The tiny models, built once and cached: `ensure_tiny_models(dir)` and `vft models tiny DIR`.

`ensure_tiny_models(dir)` returns the tiny checkpoints under ``dir`` (see `tiny_build` for what they are), building
them on first use; it is cheap when they are complete and safe when several processes call it together. The `vft`
command calls it (under the core's `qwen.tiny_models_root`) before a command that loads models when
VFT_TINY_MODELS=1. `vft models tiny DIR [--seed N] [--force]` does it by hand and prints the paths as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from ..qwen import tiny_model_folder
from .tiny_build import build_tiny_models, write_json
from .tiny_layout import KINDS, MARKER_FILE, TinyModels, is_complete


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_tiny_models(directory: str | Path, seed: int = 0) -> TinyModels:
    """The tiny models under `directory`, built on first use. Several processes may call this at once: one builds
    (under a lock file) into a staging folder and moves the finished folders into place; the others wait."""
    root = Path(directory)
    if is_complete(root, seed):
        return TinyModels.at(root)
    root.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(root / ".lock"):
        if is_complete(root, seed):
            return TinyModels.at(root)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
        try:
            build_tiny_models(staging, seed=seed)
            (root / MARKER_FILE).unlink(missing_ok=True)
            for kind in KINDS:
                target = tiny_model_folder(root, kind)
                if target.exists():
                    shutil.rmtree(target)
                os.replace(tiny_model_folder(staging, kind), target)
            models = TinyModels.at(root)
            marker = json.loads((staging / MARKER_FILE).read_text(encoding="utf-8"))
            tmp_marker = staging / (MARKER_FILE + ".tmp")
            write_json(tmp_marker, {**marker, **models.as_dict()})
            os.replace(tmp_marker, root / MARKER_FILE)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return models


def main(argv: list[str] | None = None) -> int:
    from .model_download import add_parser, download

    parser = argparse.ArgumentParser(
        prog="vft models",
        description="Qwen3-TTS checkpoints: tiny random ones for tests, or the real ones downloaded.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    tiny = sub.add_parser(
        "tiny", help="build base/, voice_design/ and custom_voice/ under DIR; print paths as JSON"
    )
    tiny.add_argument("directory", metavar="DIR", type=Path)
    tiny.add_argument("--seed", type=int, default=0, help="random seed (same seed, same weights)")
    tiny.add_argument("--force", action="store_true", help="rebuild even when DIR already holds tiny models")
    args = parser.parse_args(argv)
    if args.command == "download":
        return download(args)

    started = time.monotonic()
    if args.force:
        (args.directory / MARKER_FILE).unlink(missing_ok=True)
    models = ensure_tiny_models(args.directory, seed=args.seed)
    print(json.dumps({**models.as_dict(), "seconds": round(time.monotonic() - started, 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
