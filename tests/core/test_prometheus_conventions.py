"""promtool (Debian's prometheus package, installed by `make setup`) checks our metric names and the chart's rules."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers.chart import S3_KEYS

REPO = Path(__file__).resolve().parents[2]
HELM = Path(sys.executable).parent / "helm"

pytestmark = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (apt: prometheus)"
)


def test_every_metric_follows_prometheus_naming():
    # A fresh interpreter, so the registry holds exactly what the servers register.
    script = (
        "import voicefinetune_inference.metrics, voicefinetune_operator.metrics, voicefinetune.facade.metrics\n"
        "from voicefinetune.metrics import exposition\n"
        "import sys; sys.stdout.write(exposition()[0].decode())\n"
    )
    exposition = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True
    ).stdout
    assert "vft_" in exposition
    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=exposition, capture_output=True, text=True
    )
    assert checked.returncode == 0 and not checked.stdout.strip(), checked.stdout + checked.stderr


def test_the_charts_alert_rules_load(tmp_path):
    rendered = subprocess.run(
        [
            str(HELM),
            "template",
            "t",
            str(REPO / "charts" / "voicefinetune"),
            *S3_KEYS,
            "--set",
            "monitoring.prometheusRule.enabled=true",
            "--show-only",
            "templates/prometheusrule.yaml",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump(yaml.safe_load(rendered)["spec"]))
    checked = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True)
    assert checked.returncode == 0 and "SUCCESS" in checked.stdout, checked.stdout + checked.stderr
