"""`vft`: one command, one subcommand per part. Each part parses its own arguments (``main(argv)``)."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "serve": ("voicefinetune.facade.cli", "the seed REST API on :8000 (local backend, or --backend kubernetes)"),
    "inference": ("voicefinetune.inference_server.cli", "the inference server alone"),
    "operator": ("voicefinetune.operator.cli", "the Kopf operator for VoiceFinetune resources"),
    "train": ("voicefinetune.trainer.cli", "fine-tune a voice from a dataset zip (the training Job's command)"),
    "demo": ("voicefinetune.demo", "the whole flow offline on tiny models"),
    "models": ("voicefinetune.tiny_models", "`vft models tiny DIR`: build tiny random Qwen3-TTS checkpoints"),
}


def usage() -> str:
    lines = ["usage: vft COMMAND [ARGS]", "", "commands:"]
    lines += [f"  {name:<10} {help_text}" for name, (_, help_text) in COMMANDS.items()]
    lines += ["", "`vft COMMAND --help` describes a command's arguments."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in {"-h", "--help", "help"}:
        print(usage())
        return 0
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"vft: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
