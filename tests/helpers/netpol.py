"""Whether NetworkPolicies let one pod (or address) reach another on a port, as a CNI that enforces them decides:
a pod no policy selects for a direction is open in it; a selected pod admits only what some rule allows."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: dict[str, str] = field(hash=False)
    ports: dict[str, int] = field(default_factory=dict, hash=False)  # named container ports


@dataclass(frozen=True)
class Address:
    ip: str


Peer = Pod | Address


def pod_of(obj: dict[str, Any], namespace: str | None = None) -> Pod:
    """The pod a Deployment or Job (or a Pod) makes."""
    spec = obj["spec"]
    template = spec.get("template", obj)
    ports = {
        port["name"]: port["containerPort"]
        for container in template["spec"]["containers"]
        for port in container.get("ports", [])
        if "name" in port
    }
    return Pod(namespace or obj["metadata"]["namespace"], dict(template["metadata"]["labels"]), ports)


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    selector = selector or {}
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        allowed = {
            "In": key in labels and labels[key] in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not allowed:
            return False
    return True


def _namespace_labels(namespace: str) -> dict[str, str]:
    return {"kubernetes.io/metadata.name": namespace}


def _peer_matches(rule_peer: dict[str, Any], peer: Peer, policy_namespace: str) -> bool:
    if "ipBlock" in rule_peer:
        if not isinstance(peer, Address):
            return False
        block = rule_peer["ipBlock"]
        ip = ipaddress.ip_address(peer.ip)
        return ip in ipaddress.ip_network(block["cidr"]) and not any(
            ip in ipaddress.ip_network(excluded) for excluded in block.get("except") or []
        )
    if not isinstance(peer, Pod):
        return False
    if "namespaceSelector" in rule_peer:
        if not selects(rule_peer["namespaceSelector"], _namespace_labels(peer.namespace)):
            return False
    elif peer.namespace != policy_namespace:
        return False
    return selects(rule_peer.get("podSelector"), peer.labels)


def _port_matches(rule_ports: list[dict[str, Any]] | None, port: int, protocol: str, target: Peer) -> bool:
    if not rule_ports:
        return True
    for rule_port in rule_ports:
        number = rule_port.get("port")
        if isinstance(number, str):
            number = target.ports.get(number) if isinstance(target, Pod) else None
        if rule_port.get("protocol", "TCP") == protocol and (number is None or number == port):
            return True
    return False


def _allowed(
    policies: list[dict[str, Any]],
    subject: Pod,
    direction: str,
    other: Peer,
    port: int,
    protocol: str,
    target: Peer,
) -> bool:
    kind = {"ingress": "Ingress", "egress": "Egress"}[direction]
    selecting = [
        policy
        for policy in policies
        if policy["metadata"]["namespace"] == subject.namespace
        and selects(policy["spec"]["podSelector"], subject.labels)
        and kind in policy["spec"].get("policyTypes", ["Ingress"])
    ]
    if not selecting:
        return True
    peers_key = "from" if direction == "ingress" else "to"
    return any(
        _port_matches(rule.get("ports"), port, protocol, target)
        and (
            not rule.get(peers_key)
            or any(_peer_matches(p, other, policy["metadata"]["namespace"]) for p in rule[peers_key])
        )
        for policy in selecting
        for rule in policy["spec"].get(direction) or []
    )


def reaches(
    policies: list[dict[str, Any]], source: Peer, target: Peer, port: int, protocol: str = "TCP"
) -> bool:
    """Whether ``source`` may open a connection to ``target``'s ``port``: the source's egress and the target's
    ingress must both allow it (an Address has no policies)."""
    egress = not isinstance(source, Pod) or _allowed(
        policies, source, "egress", target, port, protocol, target
    )
    ingress = not isinstance(target, Pod) or _allowed(
        policies, target, "ingress", source, port, protocol, target
    )
    return egress and ingress


def selected(policies: list[dict[str, Any]], pod: Pod, kind: str) -> bool:
    """Whether some policy limits ``pod``'s ``kind`` (Ingress or Egress) traffic."""
    return any(
        policy["metadata"]["namespace"] == pod.namespace
        and selects(policy["spec"]["podSelector"], pod.labels)
        and kind in policy["spec"].get("policyTypes", ["Ingress"])
        for policy in policies
    )
