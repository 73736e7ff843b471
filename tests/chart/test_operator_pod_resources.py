"""The chart's values size and rank the pods the operator makes: CPU limits (a namespace with a ``limits.cpu``
ResourceQuota admits only pods that have one) and a PriorityClass, for the training Job and the inference Deployment."""

from __future__ import annotations

from tests.helpers.chart import operator_built, render


def pods(*extra: str) -> tuple[dict, dict]:
    job, deployment, _service = operator_built(render(*extra))
    return job["spec"]["template"]["spec"], deployment["spec"]["template"]["spec"]


def test_cpu_limits_and_priority_classes_from_the_values_reach_the_operators_pods():
    training, inference = pods(
        "--set-string",
        "training.cpuLimit=6,training.priorityClassName=batch-low,inference.cpuLimit=1500m",
        "--set-string",
        "inference.priorityClassName=serving-high,training.memory=40Gi,inference.cpu=2",
    )
    assert training["containers"][0]["resources"] == {
        "requests": {"cpu": "4", "memory": "40Gi", "nvidia.com/gpu": "1"},
        "limits": {"cpu": "6", "memory": "40Gi", "nvidia.com/gpu": "1"},
    }
    assert inference["containers"][0]["resources"] == {
        "requests": {"cpu": "2", "memory": "32Gi", "nvidia.com/gpu": "1"},
        "limits": {"cpu": "1500m", "memory": "32Gi", "nvidia.com/gpu": "1"},
    }
    assert (training["priorityClassName"], inference["priorityClassName"]) == ("batch-low", "serving-high")


def test_by_default_the_gpu_pods_have_no_cpu_limit_and_no_priority_class():
    for pod in pods():
        assert "cpu" not in pod["containers"][0]["resources"]["limits"]
        assert "priorityClassName" not in pod
