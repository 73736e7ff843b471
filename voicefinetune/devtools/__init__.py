"""Developer tooling: tiny random Qwen3-TTS checkpoints (`vft models tiny`), synthetic datasets and `vft demo`.

Nothing here runs in production. Modules here may import the core (`voicefinetune.settings`, `schemas`, `qwen`...)
and never a part (facade, operator, inference server, trainer); the core never imports this package: the `vft`
command (the top layer) calls it.
"""
