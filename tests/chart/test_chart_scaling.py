"""The chart for production: autoscaled inference (HPA, PDB), two operator replicas, leader election, and the
operator settings it hands over matching what the operator builds."""

from __future__ import annotations

import subprocess

from voicefinetune_operator.config import OperatorConfig
from voicefinetune_operator.inference import build_inference_deployment

from tests.helpers.chart import CHART, S3_KEYS, VALIDATE, helm, of_kind, render, rules_of

PRODUCTION = [
    "--set",
    "inference.autoscaling.enabled=true",
    "--set",
    "inference.autoscaling.maxReplicas=4",
    "--set",
    "operator.replicas=2",
    "--set",
    "imagePullSecrets[0].name=regcred",
]


def operator_config(docs: list[dict]) -> OperatorConfig:
    (config,) = [
        c for c in of_kind(docs, "ConfigMap") if c["metadata"]["name"] == "vft-voicefinetune-operator"
    ]
    return OperatorConfig.from_env({**config["data"], "VFT_OPERATOR_SECRET_KEY": "k"})


def test_autoscaling_renders_an_hpa_and_a_pdb_over_the_operators_inference_pods():
    docs = render(*PRODUCTION)
    (hpa,) = of_kind(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "vft-voicefinetune-inference",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 4)
    config = operator_config(docs)
    assert config.inference_autoscaling is True and config.image_pull_secrets == ("regcred",)
    deployment = build_inference_deployment(config)
    (pdb,) = of_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    selector = pdb["spec"]["selector"]["matchLabels"]
    assert selector == deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert selector["app.kubernetes.io/instance"] == "vft"
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["requests"]["cpu"] == "1"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]


def test_defaults_render_no_hpa_and_no_pdb_for_one_replica():
    docs = render()
    assert not of_kind(docs, "HorizontalPodAutoscaler") and not of_kind(docs, "PodDisruptionBudget")
    assert of_kind(render("--set", "inference.replicas=2"), "PodDisruptionBudget")
    assert operator_config(docs).inference_autoscaling is False


def test_two_operator_replicas_roll_with_leader_election_on_a_lease():
    docs = render(*PRODUCTION)
    (operator,) = [
        d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == "vft-voicefinetune-operator"
    ]
    assert operator["spec"]["replicas"] == 2
    assert operator["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    assert (
        operator["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"]
        == "progress"
    )
    config = operator_config(docs)
    assert (config.leader_election, config.lease_name, config.namespace) == (
        True,
        "vft-voicefinetune-operator",
        "voices",
    )
    granted = rules_of(docs, "vft-voicefinetune-operator-inference")
    assert {
        ("coordination.k8s.io", "leases", verb, "vft-voicefinetune-operator") for verb in ("get", "patch")
    } <= granted
    single = render("--set", "operator.leaderElection.enabled=false", "--set", "operator.replicas=2")
    (alone,) = [
        d for d in of_kind(single, "Deployment") if d["metadata"]["name"] == "vft-voicefinetune-operator"
    ]
    assert alone["spec"]["replicas"] == 1 and alone["spec"]["strategy"] == {"type": "Recreate"}


def test_production_values_lint_and_validate_for_kubernetes_1_30(tmp_path):
    result = helm("lint", "--strict", str(CHART), *S3_KEYS, *PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    rendered = helm(
        "template", "vft", str(CHART), "--namespace", "voices", "--include-crds", *S3_KEYS, *PRODUCTION
    )
    assert rendered.returncode == 0, rendered.stderr
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(rendered.stdout)
    check = subprocess.run(
        [VALIDATE, "-k", "1.30.0", "--strict", str(manifest)], capture_output=True, text=True, timeout=120
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_values_schema_refuses_more_than_one_training_gpu():
    result = helm("template", "vft", str(CHART), *S3_KEYS, "--set", "training.gpus=2")
    assert result.returncode != 0 and "maximum" in result.stderr


def test_uninstall_runs_a_hook_that_releases_the_finalizers_of_the_watched_namespaces():
    docs = render("--set", "operator.watchNamespaces={voices,team-b}")
    (hook,) = [d for d in of_kind(docs, "Job") if d["metadata"]["name"].endswith("-release-finalizers")]
    assert hook["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete"
    pod = hook["spec"]["template"]["spec"]
    # its own ServiceAccount, bound in every watched namespace (the rules: test_rbac_derived.py)
    hook_account = "vft-voicefinetune-operator-release-finalizers"
    assert pod["serviceAccountName"] == hook_account and pod["securityContext"]["runAsNonRoot"]
    bound = {
        b["metadata"]["namespace"]
        for b in of_kind(docs, "RoleBinding")
        if b["metadata"]["name"] == hook_account
    }
    assert bound == {"voices", "team-b"}
    (container,) = pod["containers"]
    assert container["command"] == ["vft", "operator", "--release-finalizers"]
    assert container["args"] == ["--namespace=voices", "--namespace=team-b"]
    assert not of_kind(render("--set", "operator.releaseFinalizersOnUninstall=false"), "Job")
