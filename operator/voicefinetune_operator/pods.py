"""Why a training pod cannot run, read from its status: a container stuck waiting (a missing Secret or ConfigMap,
an image that cannot be pulled) or a pod the scheduler cannot place. Kubernetes retries these forever, so the
operator reports them on the resource instead of letting it say "running" until the Job's deadline."""

from __future__ import annotations

from typing import Any

WAITING_PROBLEMS = frozenset(
    {
        "CreateContainerConfigError",
        "CreateContainerError",
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
    }
)
UNSCHEDULABLE = "Unschedulable"


def pod_problem(pod: dict[str, Any]) -> tuple[str, str] | None:
    """(reason, message) of what keeps ``pod`` from running, or None when nothing does (yet)."""
    name = pod.get("metadata", {}).get("name", "")
    status = pod.get("status") or {}
    for container in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason in WAITING_PROBLEMS:
            detail = f": {waiting['message']}" if waiting.get("message") else ""
            return reason, f"pod {name}: container {container.get('name')} cannot start ({reason}){detail}"
    for condition in status.get("conditions") or []:
        if (condition.get("type"), condition.get("status"), condition.get("reason")) == (
            "PodScheduled",
            "False",
            UNSCHEDULABLE,
        ):
            detail = f": {condition['message']}" if condition.get("message") else ""
            return UNSCHEDULABLE, f"pod {name} cannot be scheduled ({UNSCHEDULABLE}){detail}"
    return None


def pod_running(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running"
