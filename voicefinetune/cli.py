"""`vft`: one command, one subcommand per part. Each part parses its own arguments (``main(argv)``).

With VFT_TINY_MODELS=1, `vft` builds the tiny random checkpoints (`voicefinetune.devtools`, cheap once they are
there) before running a command that loads models: the core only names their folders (`qwen.resolve_model`).
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "serve": ("voicefinetune.serve", "the REST API on :8000 (local backend, or --backend kubernetes)"),
    "inference": ("voicefinetune_inference.cli", "the inference server alone"),
    "operator": ("voicefinetune_operator.cli", "the Kopf operator for VoiceFinetune resources"),
    "train": (
        "voicefinetune_trainer.cli",
        "fine-tune a voice from a dataset zip (the training Job's command)",
    ),
    "demo": ("voicefinetune.devtools.demo", "the whole flow offline on tiny models"),
    "dataset": (
        "voicefinetune.devtools.dataset_cli",
        "`vft dataset check ZIP | make FOLDER | sample DIR`: check or build a dataset zip",
    ),
    "models": (
        "voicefinetune.devtools.tiny_models",
        "`vft models download [--dir DIR]`: fetch the real checkpoints; `vft models tiny DIR`: tiny random ones",
    ),
}
# Commands that load Qwen3-TTS models, in this process or in children that come back through `vft` (the local
# backend's `vft train`). `vft demo` builds its own tiny models (--models-dir) and runs `vft serve`.
LOADS_MODELS = frozenset({"serve", "inference", "train"})


def usage() -> str:
    lines = ["usage: vft COMMAND [ARGS]", "", "commands:"]
    lines += [f"  {name:<10} {help_text}" for name, (_, help_text) in COMMANDS.items()]
    lines += ["", "`vft COMMAND --help` describes a command's arguments."]
    return "\n".join(lines)


def loads_models(command: str, rest: list[str]) -> bool:
    """Whether `vft COMMAND REST...` loads models (not for --help; `vft serve` only on its local backend)."""
    if command not in LOADS_MODELS or "-h" in rest or "--help" in rest:
        return False
    if command == "serve":
        from .serve import parse_args

        return parse_args(rest).backend == "local"
    return True


def ensure_tiny_models_for(command: str, rest: list[str]) -> None:
    """With VFT_TINY_MODELS=1, make sure the tiny checkpoints exist where `qwen.resolve_model` looks for them."""
    if not loads_models(command, rest):
        return
    from .settings import Settings

    settings = Settings.from_env()
    if not settings.tiny_models:
        return
    from .devtools.tiny_models import ensure_tiny_models
    from .qwen import tiny_models_root

    ensure_tiny_models(tiny_models_root(settings))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in {"-h", "--help", "help"}:
        print(usage())
        return 0
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"vft: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    ensure_tiny_models_for(command, rest)
    module = importlib.import_module(COMMANDS[command][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
