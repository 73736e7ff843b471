"""The chart's NetworkPolicies, read as an enforcing CNI would (``tests.helpers.netpol``), over the pods the chart
makes and those the operator builds with the chart's settings (their labels are the operator's, not copies)."""

from __future__ import annotations

import pytest

from tests.helpers.chart import CHART, S3_KEYS, helm, of_kind, operator_built, render
from tests.helpers.netpol import Address, Pod, pod_of, reaches, selected

S3_ENDPOINT, OTHER_PUBLIC, METADATA = (
    Address("203.0.113.7"),
    Address("198.51.100.9"),
    Address("169.254.169.254"),
)
DNS = Pod("kube-system", {"k8s-app": "kube-dns"})
SCRAPER = Pod("monitoring", {"app.kubernetes.io/name": "prometheus"})
STRANGER = Pod("voices", {"app": "something-else"})
NARROW_S3 = (
    "--set",
    "networkPolicy.s3.ipBlocks[0].cidr=203.0.113.0/24",
    "--set",
    "networkPolicy.s3.ports={9000}",
)


def cluster(*extra: str, namespace: str = "voices"):
    """The rendered policies and the pods: facade, operator, hook, training (in ``namespace``), inference."""
    docs = render(*extra)
    policies = of_kind(docs, "NetworkPolicy")
    deployments = {
        d["metadata"]["name"].removeprefix("vft-voicefinetune-"): d for d in of_kind(docs, "Deployment")
    }
    (hook,) = of_kind(docs, "Job")
    job, inference, _service = operator_built(docs, namespace)
    pods = {
        "facade": pod_of(deployments["facade"]),
        "operator": pod_of(deployments["operator"]),
        "hook": pod_of(hook),
        "trainer": pod_of(job),
        "inference": pod_of(inference),
    }
    return policies, pods


def test_every_pod_is_selected_and_training_and_inference_egress_is_limited():
    policies, pods = cluster()
    assert {name for name, pod in pods.items() if selected(policies, pod, "Ingress")} == set(pods)
    assert {name for name, pod in pods.items() if selected(policies, pod, "Egress")} == {
        "trainer",
        "inference",
    }


def test_the_inference_servers_take_only_the_facade_the_operator_and_the_scraper():
    policies, pods = cluster()
    inference = pods["inference"]
    assert reaches(policies, pods["facade"], inference, 8000)
    assert reaches(policies, pods["operator"], inference, 8000)
    assert reaches(policies, SCRAPER, inference, 8000)
    for outsider in (pods["trainer"], STRANGER, OTHER_PUBLIC):
        assert not reaches(policies, outsider, inference, 8000)
    assert not reaches(policies, pods["facade"], inference, 9000)


def test_the_operators_progress_port_takes_only_training_pods_and_the_scraper():
    policies, pods = cluster()
    operator = pods["operator"]
    assert reaches(policies, pods["trainer"], operator, 8081)
    assert reaches(policies, SCRAPER, operator, 8081)
    for outsider in (pods["facade"], pods["inference"], STRANGER, OTHER_PUBLIC):
        assert not reaches(policies, outsider, operator, 8081)
    assert not reaches(policies, pods["trainer"], operator, 8080)


def test_training_pods_reach_only_s3_dns_and_the_operator():
    policies, pods = cluster(*NARROW_S3)
    trainer = pods["trainer"]
    assert reaches(policies, trainer, S3_ENDPOINT, 9000)
    assert reaches(policies, trainer, DNS, 53, "UDP") and reaches(policies, trainer, DNS, 53, "TCP")
    assert reaches(policies, trainer, pods["operator"], 8081)
    for forbidden, port in (
        (S3_ENDPOINT, 443),
        (OTHER_PUBLIC, 443),
        (METADATA, 80),
        (pods["inference"], 8000),
        (pods["facade"], 8000),
        (STRANGER, 80),
    ):
        assert not reaches(policies, trainer, forbidden, port), (forbidden, port)
    assert not reaches(policies, STRANGER, trainer, 8080)


def test_training_pods_in_another_watched_namespace_are_limited_and_may_report():
    policies, pods = cluster("--set", "operator.watchNamespaces={voices,team-b}", namespace="team-b")
    trainer = pods["trainer"]
    assert trainer.namespace == "team-b" and selected(policies, trainer, "Egress")
    assert reaches(policies, trainer, pods["operator"], 8081)
    assert not reaches(policies, trainer, OTHER_PUBLIC, 80)


def test_inference_pods_reach_s3_dns_and_the_reference_audio_origins_only():
    policies, pods = cluster(
        *NARROW_S3,
        "--set",
        "networkPolicy.referenceAudio.ipBlocks[0].cidr=198.51.100.0/24",
        "--set",
        "networkPolicy.referenceAudio.ports={443}",
    )
    inference = pods["inference"]
    assert reaches(policies, inference, S3_ENDPOINT, 9000)
    assert reaches(policies, inference, OTHER_PUBLIC, 443)  # a reference-audio origin
    assert reaches(policies, inference, DNS, 53, "UDP")
    for forbidden, port in (
        (Address("192.0.2.1"), 443),
        (OTHER_PUBLIC, 80),
        (pods["operator"], 8081),
        (METADATA, 80),
    ):
        assert not reaches(policies, inference, forbidden, port), (forbidden, port)


def test_the_facade_takes_anyone_unless_its_clients_are_named():
    policies, pods = cluster()
    assert reaches(policies, OTHER_PUBLIC, pods["facade"], 8000)
    clients = "networkPolicy.facadeFrom[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=apps"
    policies, pods = cluster("--set", clients)
    assert not reaches(policies, OTHER_PUBLIC, pods["facade"], 8000)
    assert not reaches(policies, Pod("other-apps", {}), pods["facade"], 8000)
    assert reaches(policies, Pod("apps", {}), pods["facade"], 8000)
    assert reaches(policies, SCRAPER, pods["facade"], 8000)


@pytest.mark.parametrize(
    "setting", ["networkPolicy.enabled=false", "networkPolicy.metricsNamespaceLabels=null"]
)
def test_policies_and_the_scraper_rule_can_be_switched_off(setting):
    policies, pods = cluster("--set", setting)
    if setting.startswith("networkPolicy.enabled"):
        assert policies == []
    else:
        assert not reaches(policies, SCRAPER, pods["operator"], 8081)
        assert reaches(policies, pods["trainer"], pods["operator"], 8081)


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("networkPolicy.s3.ports={70000}", "maximum"),
        ("networkPolicy.enabled=maybe", "want boolean"),
        ("networkPolicy.referenceAudio.ipBlocks[0].port=1", "missing property 'cidr'"),
        ("networkPolicy.dns.podLabels=null", "podLabels"),
    ],
)
def test_the_values_schema_refuses_bad_network_policy_values(setting, complaint):
    result = helm("template", "vft", str(CHART), *S3_KEYS, "--set", setting)
    assert result.returncode != 0 and complaint in result.stderr, result.stderr
