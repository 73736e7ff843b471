"""`vft models download`: the default Qwen3-TTS checkpoints (``VFT_BASE_MODEL``'s and ``VFT_VOICE_DESIGN_MODEL``'s
defaults) fetched through ``huggingface_hub`` into one folder, their sizes shown first and checked against the free
disk, with huggingface_hub's progress bars; then the two settings that point the servers at the folders.

For a machine without internet: run it where there is, copy the folder over, and set the two variables it prints.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from ..settings import SEED_BASE_MODEL, SEED_VOICE_DESIGN_MODEL

DEFAULT_DIR = Path("models")
CHECKPOINTS = {"VFT_BASE_MODEL": SEED_BASE_MODEL, "VFT_VOICE_DESIGN_MODEL": SEED_VOICE_DESIGN_MODEL}
OFFLINE_HELP = (
    "download them on a machine with internet access (`vft models download --dir DIR`), copy DIR here and set "
    + " and ".join(f"{name}=DIR/{repo.split('/')[-1]}" for name, repo in CHECKPOINTS.items())
)


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "download",
        help="fetch the default 1.7B checkpoints from the Hugging Face hub (sizes first, progress bars)",
    )
    parser.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, help=f"where they go (default ./{DEFAULT_DIR})"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="list what would be fetched and its size, then stop"
    )


def repo_size(repo: str) -> int:
    from huggingface_hub import HfApi

    info = HfApi().model_info(repo, files_metadata=True)
    return sum(sibling.size or 0 for sibling in info.siblings or [])


def download(args: argparse.Namespace) -> int:
    from huggingface_hub import snapshot_download

    try:
        sizes = {repo: repo_size(repo) for repo in CHECKPOINTS.values()}
    except (
        OSError
    ) as exc:  # no network, HF_HUB_OFFLINE=1, the hub's HTTP errors (all OSErrors in huggingface_hub)
        print(f"vft models download: cannot reach the Hugging Face hub ({type(exc).__name__}: {exc}).")
        print(f"Without internet access here, {OFFLINE_HELP}.")
        return 1
    for repo, size in sizes.items():
        print(f"{repo:<45} {size / 1e9:6.2f} GB -> {args.dir / repo.split('/')[-1]}")
    total = sum(sizes.values())
    args.dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(args.dir).free
    print(f"{'total':<45} {total / 1e9:6.2f} GB ({free / 1e9:.1f} GB free in {args.dir})")
    if args.dry_run:
        return 0
    if free < total:
        print(
            f"vft models download: not enough disk in {args.dir}: free {total / 1e9:.1f} GB or choose --dir"
        )
        return 1
    for repo in CHECKPOINTS.values():
        snapshot_download(repo, local_dir=args.dir / repo.split("/")[-1])
    print("Point the servers at them:")
    for name, repo in CHECKPOINTS.items():
        print(f"  export {name}={(args.dir / repo.split('/')[-1]).resolve()}")
    return 0
