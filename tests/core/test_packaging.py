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
        "import voicefinetune_operator.cli, voicefinetune_operator.handlers\n"
        "create_kubernetes_app(Settings.from_env({}))\n"
        f"print(','.join(m for m in {ML_PACKAGES!r} if m in sys.modules))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, check=True, capture_output=True, text=True
    )
    assert loaded.stdout.strip() == ""


PARTS = {
    "operator": "voicefinetune-operator",
    "inference_server": "voicefinetune-inference",
    "trainer_image": "voicefinetune-trainer",
}


def wheel_requirements(source: Path, out: Path) -> tuple[str, list[str]]:
    """Builds the distribution's wheel (no network, no dependencies) and reads its name and Requires-Dist."""
    import email
    import zipfile

    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(source),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    (wheel,) = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        message = email.message_from_bytes(archive.read(metadata))
    return message["Name"], message.get_all("Requires-Dist") or []


def requirement_names(requirements: list[str]) -> set[str]:
    import re

    return {
        re.split(r"[\s\[<>=!~;(]", requirement, maxsplit=1)[0].lower()
        for requirement in requirements
        if "extra ==" not in requirement
    }


def test_each_part_is_a_distribution_that_depends_on_the_core_and_on_no_other_part(tmp_path):
    root = PYPROJECT.parent
    for folder, name in PARTS.items():
        built, requirements = wheel_requirements(root / folder, tmp_path / folder)
        names = requirement_names(requirements)
        assert built == name
        assert "voicefinetune" in names, requirements
        assert not names & set(PARTS.values()), requirements
        if folder == "operator":
            assert not names & {"torch", "transformers", "qwen-tts"}, requirements
        if folder == "trainer_image":
            assert not names & {"fastapi", "uvicorn", "kopf", "starlette"}, requirements
    core, requirements = wheel_requirements(root, tmp_path / "core")
    assert core == "voicefinetune"
    assert not requirement_names(requirements) & {"torch", "transformers", "fastapi", "kopf", *PARTS.values()}


def test_the_operators_wheel_brings_no_ml_stack_through_the_core_extras_it_asks_for(tmp_path):
    import tomllib as toml

    root = PYPROJECT.parent
    _, requirements = wheel_requirements(root / "operator", tmp_path / "operator")
    extras = {
        extra
        for requirement in requirements
        if requirement.startswith("voicefinetune[")
        for extra in requirement.split("[", 1)[1].split("]", 1)[0].split(",")
    }
    optional = toml.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    pulled = " ".join(dependency for extra in extras for dependency in optional[extra.strip()])
    assert not [name for name in ("torch", "transformers", "qwen-tts", "numpy") if name in pulled]
