"""The chart refuses to render without S3 keys (instead of a Secret with empty keys), unless an existing Secret is
named or the install says it has no keys (``s3.keyless``: the pods then get none, and the operator's pods neither)."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.helpers.chart import CHART, helm, of_kind, operator_built, operator_config, render
from tests.helpers.k8s_harness import REPO

MESSAGE = (
    "S3 keys missing: set s3.accessKey and s3.secretKey, or s3.existingSecret (a Secret holding them), or "
    "s3.keyless=true (the endpoint needs no keys, or the pods get credentials another way)"
)
KEY_VARIABLES = {"E2E_ACCESS_KEY", "E2E_SECRET_KEY"}


@pytest.mark.parametrize(
    "given", [(), ("--set", "s3.accessKey=only-one"), ("--set", "s3.secretKey=only-one")]
)
def test_without_keys_the_render_fails_with_a_clear_message(given):
    result = helm("template", "vft", str(CHART), *given)
    assert result.returncode != 0
    assert MESSAGE in result.stderr


def key_variables(docs) -> set[str]:
    workloads = of_kind(docs, "Deployment") + operator_built(docs)[:2]
    return {
        item["name"]
        for workload in workloads
        for container in workload["spec"]["template"]["spec"]["containers"]
        for item in container.get("env", [])
        if item["name"] in KEY_VARIABLES
    }


def test_keys_given_make_the_secret_every_pod_reads():
    docs = render("--set", "s3.accessKey=AK,s3.secretKey=SK")
    (secret,) = [s for s in of_kind(docs, "Secret") if s["metadata"]["name"] == "vft-voicefinetune-s3"]
    assert secret["stringData"] == {"E2E_ACCESS_KEY": "AK", "E2E_SECRET_KEY": "SK"}
    assert key_variables(docs) == KEY_VARIABLES


def test_an_existing_secret_is_read_and_none_is_made():
    docs = render("--set", "s3.accessKey=,s3.secretKey=,s3.existingSecret=my-s3")
    assert not [s for s in of_kind(docs, "Secret") if s["metadata"]["name"].endswith("-s3")]
    assert key_variables(docs) == KEY_VARIABLES
    assert operator_config(docs).s3_secret == "my-s3"


def test_keyless_installs_make_and_reference_no_s3_secret():
    docs = render("--set", "s3.accessKey=,s3.secretKey=,s3.keyless=true")
    assert not [s for s in of_kind(docs, "Secret") if s["metadata"]["name"].endswith("-s3")]
    assert key_variables(docs) == set()
    assert operator_config(docs).s3_keys is False


def skaffold_render(environment: dict[str, str]):
    """``helm template`` with the values skaffold's kind-cpu profile sets, its templates filled from ``environment``
    (skaffold's own template variables, IMAGE_REPO_*/IMAGE_TAG_*, stand in as plain names)."""
    config = yaml.safe_load((REPO / "skaffold.yaml").read_text())
    (release,) = config["manifests"]["helm"]["releases"]
    (profile,) = [p for p in config["profiles"] if p["name"] == "kind-cpu"]
    (values_files,) = [
        patch["value"] for patch in profile["patches"] if patch["path"].endswith("/valuesFiles")
    ]
    settings = []
    for key, template in release["setValueTemplates"].items():
        value = re.sub(
            r"\{\{\.(\w+)\}\}", lambda m: environment.get(m.group(1), m.group(1).lower()), template
        )
        settings += ["--set-string", f"{key}={value}"]
    files = [arg for path in values_files for arg in ("-f", str(REPO / path))]
    return helm("template", release["name"], str(REPO / release["chartPath"]), *files, *settings)


def test_skaffold_passes_the_s3_keys_of_the_environment():
    rendered = skaffold_render({"E2E_ACCESS_KEY": "AK", "E2E_SECRET_KEY": "SK"})
    assert rendered.returncode == 0, rendered.stderr
    secrets = [d for d in yaml.safe_load_all(rendered.stdout) if d and d["kind"] == "Secret"]
    assert [s["stringData"] for s in secrets] == [{"E2E_ACCESS_KEY": "AK", "E2E_SECRET_KEY": "SK"}]
    missing = skaffold_render({"E2E_ACCESS_KEY": "", "E2E_SECRET_KEY": ""})
    assert missing.returncode != 0 and MESSAGE in missing.stderr
