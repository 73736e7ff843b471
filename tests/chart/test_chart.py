"""The Helm chart, rendered by the real helm: lint, Kubernetes 1.30 schema validation, least-privilege RBAC,
non-root pods, and the values schema."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml

from tests.helpers.chart import CHART, S3_KEYS, VALIDATE, helm, of_kind, render, rules_of
from tests.helpers.k8s_harness import CRD

VARIANTS = {
    "defaults": [],
    "monitoring-clusterwide": [
        "--set",
        "monitoring.serviceMonitor.enabled=true",
        "--set",
        "monitoring.prometheusRule.enabled=true",
        "--set",
        "operator.clusterWide=true",
    ],
    "namespaces-existing-secret": [
        "--set",
        "operator.watchNamespaces={voices,team-b}",
        "--set",
        "s3.existingSecret=my-s3",
    ],
    "kind-cpu": ["-f", str(CHART / "ci" / "kind-cpu-values.yaml")],
    "production": ["-f", str(CHART / "ci" / "production-values.yaml")],
}


def test_helm_lint_strict():
    result = helm("lint", "--strict", str(CHART), *S3_KEYS)
    assert result.returncode == 0, result.stdout + result.stderr
    for values in sorted((CHART / "ci").glob("*-values.yaml")):
        result = helm("lint", "--strict", str(CHART), *S3_KEYS, "-f", str(values))
        assert result.returncode == 0, values.name + result.stdout + result.stderr


@pytest.mark.parametrize("variant", VARIANTS)
def test_rendered_manifests_validate_for_kubernetes_1_30(variant, tmp_path):
    result = helm(
        "template", "vft", str(CHART), "--namespace", "voices", "--include-crds", *S3_KEYS, *VARIANTS[variant]
    )
    assert result.returncode == 0, result.stderr
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(result.stdout)
    check = subprocess.run(
        [VALIDATE, "-k", "1.30.0", "--strict", str(manifest)], capture_output=True, text=True, timeout=120
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "ERROR" not in check.stdout + check.stderr


def test_chart_ships_the_crd_unchanged():
    (crd,) = of_kind(render(crds=True), "CustomResourceDefinition")
    assert crd == yaml.safe_load(CRD.read_text())


OPERATOR_RULES = (
    {("voicefinetune.io", "voicefinetunes", verb, "") for verb in ("get", "list", "watch", "patch")}
    | {
        ("voicefinetune.io", "voicefinetunes/status", "patch", ""),
        # owner references with blockOwnerDeletion need it where OwnerReferencesPermissionEnforcement runs (OpenShift)
        ("voicefinetune.io", "voicefinetunes/finalizers", "update", ""),
        ("", "pods", "list", ""),
        ("", "pods", "watch", ""),
        ("", "events", "create", ""),
        ("", "secrets", "create", ""),  # the S3 Secret's copy for a training pod in another namespace
    }
    | {("batch", "jobs", verb, "") for verb in ("get", "list", "watch", "create", "delete")}
)


def test_rbac_grants_only_what_operator_and_facade_call():
    docs = render()
    assert rules_of(docs, "vft-voicefinetune-operator") == OPERATOR_RULES
    inference = "vft-voicefinetune-inference"
    assert rules_of(docs, "vft-voicefinetune-operator-inference") == {
        ("apps", "deployments", "create", ""),
        ("apps", "deployments", "get", inference),
        ("apps", "deployments", "patch", inference),
        ("apps", "deployments", "delete", inference),  # replaced when its selector must change
        ("apps", "deployments", "get", "vft-voicefinetune-operator"),
        ("", "services", "create", ""),
        ("", "services", "get", inference),
        ("", "services", "patch", inference),
        ("", "secrets", "get", "vft-voicefinetune-s3"),
        # the Secret in which the operator keeps its progress-token key (made at its first start)
        ("", "secrets", "create", ""),
        ("", "secrets", "get", "vft-voicefinetune-operator-progress-key"),
        ("coordination.k8s.io", "leases", "create", ""),
        ("coordination.k8s.io", "leases", "get", "vft-voicefinetune-operator"),
        ("coordination.k8s.io", "leases", "patch", "vft-voicefinetune-operator"),
    }
    assert rules_of(docs, "vft-voicefinetune-facade") == {
        ("voicefinetune.io", "voicefinetunes", verb, "")
        for verb in ("get", "list", "watch", "create", "delete")
    }
    assert not of_kind(docs, "ClusterRole") and not of_kind(docs, "ClusterRoleBinding")
    for role in of_kind(docs, "Role"):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
            if "secrets" in rule["resources"]:  # never list, watch or read any Secret but the named ones
                assert set(rule["verbs"]) <= {"create", "get"}
                assert "get" not in rule["verbs"] or rule["resourceNames"] in (
                    ["vft-voicefinetune-s3"],
                    ["vft-voicefinetune-operator-progress-key"],
                )


def test_rbac_follows_the_watched_namespaces():
    docs = render(*VARIANTS["namespaces-existing-secret"])
    namespaces = {
        r["metadata"]["namespace"]
        for r in of_kind(docs, "Role")
        if r["metadata"]["name"] == "vft-voicefinetune-operator"
    }
    assert namespaces == {"voices", "team-b"}
    (operator,) = [d for d in of_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-operator")]
    args = operator["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=voices" in args and "--namespace=team-b" in args
    clusterwide = render(*VARIANTS["monitoring-clusterwide"])
    assert rules_of(clusterwide, "voices-vft-voicefinetune-operator") == OPERATOR_RULES


@pytest.mark.parametrize("variant", VARIANTS)
def test_pods_run_as_non_root_without_privilege_escalation(variant):
    for deployment in of_kind(render(*VARIANTS[variant]), "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_s3_keys_come_from_a_secret_and_monitoring_objects_render():
    docs = render(*VARIANTS["monitoring-clusterwide"])
    for deployment in of_kind(docs, "Deployment"):
        env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        for key in ("E2E_ACCESS_KEY", "E2E_SECRET_KEY"):
            assert (
                "value" not in env[key]
                and env[key]["valueFrom"]["secretKeyRef"]["name"] == "vft-voicefinetune-s3"
            )
    assert of_kind(docs, "ServiceMonitor") and of_kind(docs, "PrometheusRule")
    dashboard = [c for c in of_kind(docs, "ConfigMap") if c["metadata"]["name"].endswith("-dashboard")]
    assert yaml.safe_load(dashboard[0]["data"]["voicefinetune.json"])["panels"]
    operator_config = [
        c for c in of_kind(docs, "ConfigMap") if c["metadata"]["name"] == "vft-voicefinetune-operator"
    ]
    assert operator_config[0]["data"]["VFT_INFERENCE_NAME"] == "vft-voicefinetune-inference"


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("training.gpus=-1", "minimum"),
        ("inference.replicas=many", "integer"),
        ("bogus=1", "additional properties"),
        ("imagePullPolicy=Sometimes", "must be one of"),
    ],
)
def test_values_schema_refuses_bad_values(setting, complaint):
    result = helm("template", "vft", str(CHART), *S3_KEYS, "--set", setting)
    assert result.returncode != 0
    assert complaint in result.stderr


def operator_env(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    (deployment,) = [
        d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == "vft-voicefinetune-operator"
    ]
    return {item["name"]: item for item in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_renders_are_reproducible_so_gitops_never_rotates_the_progress_key():
    first, second = (helm("template", "vft", str(CHART), *S3_KEYS).stdout for _ in range(2))
    assert first == second
    docs = render()
    assert operator_env(docs)["VFT_OPERATOR_KEY_SECRET"]["value"] == "vft-voicefinetune-operator-progress-key"
    assert "VFT_OPERATOR_SECRET_KEY" not in operator_env(docs)
    assert not [d for d in of_kind(docs, "Secret") if "secret-key" in (d.get("stringData") or {})]


def test_a_progress_key_given_in_the_values_comes_from_the_charts_secret():
    docs = render("--set", "operator.secretKey=given-key")
    (secret,) = [d for d in of_kind(docs, "Secret") if d["metadata"]["name"] == "vft-voicefinetune-operator"]
    assert secret["stringData"]["secret-key"] == "given-key"
    assert operator_env(docs)["VFT_OPERATOR_SECRET_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "vft-voicefinetune-operator", "key": "secret-key"}
    }
    assert "VFT_OPERATOR_KEY_SECRET" not in operator_env(docs)
