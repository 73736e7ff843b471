"""The operator under the chart's own RBAC: the emulator enforces the rendered Roles (403 for what they do not
grant), so a call the chart forgot fails here as it would on a real cluster."""

from __future__ import annotations

import kubernetes

from tests.helpers.chart import of_kind, render
from tests.helpers.k8s_harness import operator_environment, wait_for
from tests.helpers.rbac import Access, authorizer_for

NAMESPACE = "default"
OPERATOR = "vft-voicefinetune-operator"
INFERENCE = "vft-voicefinetune-inference"
OLD_SELECTOR = {"app.kubernetes.io/name": "voicefinetune", "app.kubernetes.io/component": "inference"}


def chart_operator(docs):
    """The rendered ConfigMap's settings (names of the inference Deployment, the Lease, ...) for a local operator."""
    (config,) = [c for c in of_kind(docs, "ConfigMap") if c["metadata"]["name"] == OPERATOR]
    return config["data"]


def old_inference_deployment():
    """An inference Deployment made before the release label joined its selector (selectors cannot change)."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": INFERENCE},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": OLD_SELECTOR},
            "template": {
                "metadata": {"labels": OLD_SELECTOR},
                "spec": {"containers": [{"name": "inference", "image": "old"}]},
            },
        },
    }


def start_under_rbac(cluster, kubeconfig, start_operator, client, docs):
    kubernetes.client.AppsV1Api(client).create_namespaced_deployment(NAMESPACE, old_inference_deployment())
    authorizer = authorizer_for(docs, OPERATOR, NAMESPACE)
    cluster.call(lambda emulator: setattr(emulator, "authorizer", authorizer))
    settings = {**chart_operator(docs), "VFT_REPAIR_INTERVAL": "0.3", "VFT_LEASE_DURATION": "5"}
    return start_operator(
        env=operator_environment(kubeconfig, "http://127.0.0.1:9", settings),
        args=(f"--namespace={NAMESPACE}",),
    )


def test_the_keeper_replaces_a_drifted_selector_with_the_charts_rbac(
    cluster, kubeconfig, start_operator, client
):
    docs = render(namespace=NAMESPACE)
    start_under_rbac(cluster, kubeconfig, start_operator, client, docs)
    replaced = wait_for(
        lambda: [
            d
            for d in cluster.objects("apps/v1/deployments", NAMESPACE)
            if d["spec"]["selector"]["matchLabels"].get("app.kubernetes.io/instance") == "vft"
        ],
        timeout=20,
        what="the inference Deployment with the release label",
    )
    assert [d["metadata"]["name"] for d in replaced] == [INFERENCE]
    wait_for(lambda: cluster.objects("v1/services", NAMESPACE), what="the inference Service")
    assert cluster.call(lambda emulator: list(emulator.denied)) == []


def test_without_the_delete_rule_the_keepers_replacement_is_forbidden(
    cluster, kubeconfig, start_operator, client
):
    docs = render(namespace=NAMESPACE)
    for role in of_kind(docs, "Role"):
        for rule in role["rules"]:
            if rule["resources"] == ["deployments"]:
                rule["verbs"] = [verb for verb in rule["verbs"] if verb != "delete"]
    start_under_rbac(cluster, kubeconfig, start_operator, client, docs)
    forbidden = Access("delete", "apps", "deployments", NAMESPACE, INFERENCE)
    wait_for(
        lambda: forbidden in cluster.call(lambda emulator: list(emulator.denied)),
        timeout=20,
        what="the keeper's delete answered 403",
    )
    (kept,) = cluster.objects("apps/v1/deployments", NAMESPACE)
    assert kept["spec"]["selector"]["matchLabels"] == OLD_SELECTOR
    assert {access for access in cluster.call(lambda emulator: list(emulator.denied))} == {forbidden}
