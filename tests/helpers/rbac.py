"""RBAC as the API server applies it, for tests: the rules rendered Roles grant a ServiceAccount through its
RoleBindings (and ClusterRoleBindings), and whether they allow one request (its verb, resource and name).

The emulator (``kmock_cluster.ClusterEmulator.authorizer``) answers 403 Forbidden to a request no rule allows, as
a real cluster does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Access:
    """A request's authorization attributes, as the API server derives them from its method and path."""

    verb: str
    group: str
    resource: str  # plural, or plural/subresource
    namespace: str | None
    name: str | None


def access_of(
    method: str,
    group: str,
    plural: str,
    subresource: str | None,
    namespace: str | None,
    name: str | None,
    params: Mapping[str, str],
) -> Access:
    method = method.upper()
    if method in ("GET", "HEAD"):
        verb = "get" if name else ("watch" if params.get("watch") in ("true", "1") else "list")
    elif method == "DELETE":
        verb = "delete" if name else "deletecollection"
    else:
        verb = {"POST": "create", "PATCH": "patch", "PUT": "update"}[method]
    resource = f"{plural}/{subresource}" if subresource else plural
    return Access(verb, group, resource, namespace, name)


@dataclass(frozen=True)
class Authorizer:
    """The rules granted to one subject: (namespace the rule applies in, None for a ClusterRole's, rule)."""

    grants: tuple[tuple[str | None, Mapping[str, Any]], ...]

    def allows(self, access: Access) -> bool:
        return any(
            (namespace is None or namespace == access.namespace) and _matches(rule, access)
            for namespace, rule in self.grants
        )


def _matches(rule: Mapping[str, Any], access: Access) -> bool:
    names = rule.get("resourceNames") or []
    return (
        _has(rule["apiGroups"], access.group)
        and _has(rule["resources"], access.resource)
        and _has(rule["verbs"], access.verb)
        # A rule limited to names never covers a request without one (create, list, watch).
        and (not names or access.name in names)
    )


def _has(values: list[str], value: str) -> bool:
    return "*" in values or value in values


def authorizer_for(docs: list[dict[str, Any]], service_account: str, namespace: str) -> Authorizer:
    """What the rendered ``docs`` grant the ServiceAccount ``namespace/service_account``."""
    roles = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d for d in docs}
    grants: list[tuple[str | None, Mapping[str, Any]]] = []
    for binding in docs:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(
            s["kind"] == "ServiceAccount" and s["name"] == service_account and s.get("namespace") == namespace
            for s in binding.get("subjects") or []
        ):
            continue
        bound_in = binding["metadata"].get("namespace") if binding["kind"] == "RoleBinding" else None
        ref = binding["roleRef"]
        role = roles[(ref["kind"], bound_in if ref["kind"] == "Role" else None, ref["name"])]
        grants.extend((bound_in, rule) for rule in role["rules"])
    return Authorizer(tuple(grants))
