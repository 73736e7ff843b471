"""The pods' UID, GID and fsGroup are values (default at least 10000, as checkov's CKV_K8S_40 asks), the same in
the chart's pods, the pods the operator makes and the images' USER; left unset, the platform assigns them."""

from __future__ import annotations

import re

import pytest
import yaml
from voicefinetune_operator.config import OperatorConfig
from voicefinetune_operator.jobs import pod_security_context

from tests.helpers.chart import CHART, S3_KEYS, helm, of_kind, operator_built, render
from tests.helpers.k8s_harness import REPO

IDS = ("runAsUser", "runAsGroup", "fsGroup")
DOCKERFILES = ("operator", "voicefinetune/facade", "trainer_image", "inference_server")


def pod_security_contexts(*extra: str) -> list[dict]:
    docs = render(*extra)
    workloads = of_kind(docs, "Deployment") + of_kind(docs, "Job") + operator_built(docs)[:2]
    return [w["spec"]["template"]["spec"]["securityContext"] for w in workloads]


DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())["podSecurityContext"]
DEFAULT_RUN_AS = DEFAULTS["runAsUser"]


def test_every_pod_runs_as_the_default_ids_of_the_values_and_the_images():
    defaults = DEFAULTS
    assert set(defaults.values()) == {DEFAULT_RUN_AS} and DEFAULT_RUN_AS >= 10000
    contexts = pod_security_contexts()
    assert len(contexts) == 5
    for context in contexts:
        assert {key: context[key] for key in IDS} == defaults and context["runAsNonRoot"] is True
    for folder in DOCKERFILES:
        users = re.findall(r"^USER (\S+)$", (REPO / folder / "Dockerfile").read_text(), re.MULTILINE)
        assert users[-1] == f"{DEFAULT_RUN_AS}:{DEFAULT_RUN_AS}", folder


def test_ids_given_in_the_values_reach_every_pod():
    settings = ("--set", "podSecurityContext.runAsUser=20000,podSecurityContext.runAsGroup=20001")
    for context in pod_security_contexts(*settings):
        assert (context["runAsUser"], context["runAsGroup"], context["fsGroup"]) == (
            20000,
            20001,
            DEFAULT_RUN_AS,
        )


def test_ids_left_unset_are_the_platforms_to_assign():
    unset = (
        "--set",
        "podSecurityContext.runAsUser=null,podSecurityContext.runAsGroup=null,podSecurityContext.fsGroup=null",
    )
    for context in pod_security_contexts(*unset):
        assert not set(IDS) & set(context) and context["runAsNonRoot"] is True


def test_an_operator_without_the_variables_leaves_the_ids_to_the_images_user():
    assert pod_security_context(OperatorConfig.from_env({})) == {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


@pytest.mark.parametrize("value", ["0", "-5"])
def test_the_values_schema_refuses_root_and_negative_ids(value):
    result = helm("template", "vft", str(CHART), *S3_KEYS, "--set", f"podSecurityContext.runAsUser={value}")
    assert result.returncode != 0 and "minimum" in result.stderr
