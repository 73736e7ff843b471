"""checkov (the scanner a cluster owner runs) over the rendered chart, with the least values a render needs and with
ci/production-values.yaml, and over the objects the operator builds with each: no failed check beyond those
listed, with their reasons, in charts/voicefinetune/checkov-skips.yaml, and no listed one that is no longer needed.

checkov lives in its own environment (.venv/tools/checkov, made by scripts/setup.sh): it pins boto3, botocore and
packaging below the project's."""

from __future__ import annotations

import fnmatch
import json
import subprocess
import sys
from pathlib import Path

import yaml

from tests.helpers.chart import CHART, operator_built, render

CHECKOV = Path(sys.executable).parent / "checkov"
SKIPS = CHART / "checkov-skips.yaml"
# Each values set renders into its own namespace and is scanned on its own (checkov's graph checks, e.g. a pod
# without a NetworkPolicy, ignore namespaces).
VALUE_SETS = {"voices": (), "production": ("-f", str(CHART / "ci" / "production-values.yaml"))}


def scan(folder: Path) -> list[dict]:
    result = subprocess.run(
        [
            str(CHECKOV),
            "-d",
            str(folder),
            "--framework",
            "kubernetes",
            "--skip-download",
            "--quiet",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=70,
    )
    assert result.returncode in (0, 1), result.stderr[-3000:]  # 1: some check failed
    report = json.loads(result.stdout)
    (kubernetes,) = report if isinstance(report, list) else [report]
    assert kubernetes["summary"]["parsing_errors"] == 0
    return kubernetes["results"]["failed_checks"]


def test_checkov_finds_nothing_beyond_the_listed_exceptions(tmp_path):
    failed = set()
    for namespace, values in VALUE_SETS.items():
        folder = tmp_path / namespace
        folder.mkdir()
        docs = render(*values, namespace=namespace)
        (folder / "chart.yaml").write_text(yaml.safe_dump_all(docs))
        (folder / "operator-built.yaml").write_text(yaml.safe_dump_all(operator_built(docs, namespace)))
        failed |= {(f["check_id"], f["resource"]) for f in scan(folder)}
    skips = yaml.safe_load(SKIPS.read_text())
    assert all(skip["reason"].strip() for skip in skips)

    def excused(check: str, resource: str) -> bool:
        return any(
            skip["check"] == check and any(fnmatch.fnmatchcase(resource, p) for p in skip["resources"])
            for skip in skips
        )

    assert sorted(f for f in failed if not excused(*f)) == []
    unused = [s["check"] for s in skips if not any(check == s["check"] for check, _ in failed)]
    assert unused == []
