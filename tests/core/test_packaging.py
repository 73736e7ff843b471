"""The control plane (operator, facade on Kubernetes) runs from the base install: the slim images have no ML stack."""

import subprocess
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
ML_PACKAGES = ("torch", "transformers", "numpy", "librosa", "soundfile", "qwen_tts")


def test_base_dependencies_leave_the_ml_stack_to_the_ml_extra():
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    base = " ".join(project["dependencies"])
    assert not [name for name in ("torch", "transformers", "numpy", "librosa") if name in base]
    assert any(dep.startswith("torch") for dep in project["optional-dependencies"]["ml"])


def test_control_plane_imports_nothing_from_the_ml_stack(tmp_path):
    script = (
        "import sys\n"
        "from voicefinetune.settings import Settings\n"
        "from voicefinetune.facade.app import create_kubernetes_app\n"
        "import voicefinetune.operator.cli, voicefinetune.operator.handlers\n"
        "create_kubernetes_app(Settings.from_env({}))\n"
        f"print(','.join(m for m in {ML_PACKAGES!r} if m in sys.modules))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, check=True, capture_output=True, text=True)
    assert loaded.stdout.strip() == ""
