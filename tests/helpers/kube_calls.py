"""The Kubernetes API permissions a part's source needs, read from its syntax trees (not from a list kept by hand):

- every ``KubeClient`` call (``kube.get/list/watch/create/patch/delete``, named after the RBAC verbs) with the
  resource of the path it is given, found by following the path back to a ``*_path`` builder of
  ``voicefinetune.cluster`` (through variables, parameters, attributes, f-strings and helper functions) and
  calling that builder;
- what Kopf does for the handlers registered with ``kopf.on.*`` / ``kopf.timer`` / ``kopf.daemon``: list and watch
  each handled resource, patch those with state-changing handlers (finalizers and progress annotations), and post
  Events;
- ``update`` on ``<owner>/finalizers`` for each owner reference set with ``blockOwnerDeletion`` (the API server's
  OwnerReferencesPermissionEnforcement asks for it).

A call whose resource cannot be traced fails loudly, so a new call cannot slip past the RBAC test.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from voicefinetune.cluster import client as client_module
from voicefinetune.cluster import resource as resource_module

Permission = tuple[str, str, str]  # (apiGroup, resource, verb)

KUBE_METHODS = {"get", "list", "watch", "create", "patch", "delete"}
BUILDERS = {
    name: function
    for module in (client_module, resource_module)
    for name, function in vars(module).items()
    if name.endswith("_path") and inspect.isfunction(function)
}
# Kopf's handler kinds that keep state on the object (so Kopf patches it); event and index handlers only observe.
KOPF_CHANGING = {"create", "update", "delete", "resume", "field", "timer", "daemon"}
KOPF_OBSERVING = {"event", "index"}
PLACEHOLDER = "x"


def resource_of(path: str) -> tuple[str, str]:
    """(apiGroup, plural[/subresource]) of an API path."""
    parts = path.strip("/").split("/")
    group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
    if rest[0] == "namespaces" and len(rest) > 2:
        rest = rest[2:]
    return group, "/".join(rest[:1] + rest[2:3])


class _Module:
    """One source file: its tree, its imported module (for constants), and lookups for the path tracer."""

    def __init__(self, path: Path, module_name: str):
        self.path = path
        self.tree = ast.parse(path.read_text(), str(path))
        self.module = importlib.import_module(module_name)
        self.parents: dict[ast.AST, ast.AST] = {
            child: node for node in ast.walk(self.tree) for child in ast.iter_child_nodes(node)
        }

    def enclosing(self, node: ast.AST, kind: type | tuple[type, ...]) -> Any:
        while node in self.parents:
            node = self.parents[node]
            if isinstance(node, kind):
                return node
        return None

    def functions(self, name: str) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
        return [
            node
            for node in ast.walk(self.tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name
        ]

    def where(self, node: ast.AST) -> str:
        return f"{self.path.name}:{getattr(node, 'lineno', '?')}"

    # --- tracing a path expression back to its builders ------------------------------------------------------

    def paths(self, node: ast.expr, depth: int = 0) -> set[str]:
        if depth > 8:
            raise AssertionError(f"{self.where(node)}: cannot trace the API path {ast.unparse(node)}")
        found = self._paths(node, depth + 1)
        if not found:
            raise AssertionError(f"{self.where(node)}: cannot trace the API path {ast.unparse(node)}")
        return found

    def _paths(self, node: ast.expr, depth: int) -> set[str]:
        if isinstance(node, ast.Call):
            name = _called_name(node)
            if name in BUILDERS:
                args = [a.value if isinstance(a, ast.Constant) else PLACEHOLDER for a in node.args]
                return {BUILDERS[name](*args)}
            returns = [
                r.value
                for function in self.functions(name or "")
                for r in ast.walk(function)
                if isinstance(r, ast.Return) and r.value is not None
            ]
            return {path for value in returns for path in self.paths(value, depth)}
        if isinstance(node, ast.IfExp):
            return self.paths(node.body, depth) | self.paths(node.orelse, depth)
        if isinstance(node, ast.JoinedStr):
            return self._formatted(node, depth)
        if isinstance(node, ast.Name):
            return self._variable(node, depth)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
            cls = self.enclosing(node, ast.ClassDef)
            values = [
                statement.value
                for statement in ast.walk(cls)
                if isinstance(statement, ast.Assign)
                for target in statement.targets
                if isinstance(target, ast.Attribute) and ast.unparse(target) == f"self.{node.attr}"
            ]
            return {path for value in values for path in self.paths(value, depth)}
        return set()

    def _formatted(self, node: ast.JoinedStr, depth: int) -> set[str]:
        first = next(v for v in node.values if isinstance(v, ast.FormattedValue))
        if isinstance(first.value, ast.Name) and isinstance(getattr(self.module, first.value.id, None), str):
            # a literal path made of module constants: /apis/{GROUP}/{VERSION}/{PLURAL}
            text = "".join(
                str(v.value)
                if isinstance(v, ast.Constant)
                else str(getattr(self.module, v.value.id, PLACEHOLDER))
                if isinstance(v, ast.FormattedValue) and isinstance(v.value, ast.Name)
                else PLACEHOLDER
                for v in node.values
            )
            return {text}
        # {collection}/{name}: the collection's resource
        return self.paths(first.value, depth)

    def _variable(self, node: ast.Name, depth: int) -> set[str]:
        function = self.enclosing(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        if function is None:
            return set()
        values = [
            statement.value
            for statement in ast.walk(function)
            if isinstance(statement, ast.Assign)
            for target in statement.targets
            if isinstance(target, ast.Name) and target.id == node.id
        ]
        if values:
            return {path for value in values for path in self.paths(value, depth)}
        parameters = [a.arg for a in function.args.args]
        if node.id not in parameters:
            return set()
        position = parameters.index(node.id) - (1 if parameters[:1] == ["self"] else 0)
        arguments = []
        for call in ast.walk(self.tree):
            if isinstance(call, ast.Call) and _called_name(call) == function.name:
                keyword = [k.value for k in call.keywords if k.arg == node.id]
                arguments += keyword or call.args[position : position + 1]
        return {path for value in arguments for path in self.paths(value, depth)}


def _called_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _is_kube_call(node: ast.AST) -> bool:
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
        return False
    receiver = node.func.value
    name = receiver.id if isinstance(receiver, ast.Name) else getattr(receiver, "attr", "")
    return node.func.attr in KUBE_METHODS and name.lstrip("_") == "kube"


def client_permissions(module: _Module) -> set[Permission]:
    permissions = set()
    for node in ast.walk(module.tree):
        if _is_kube_call(node):
            call: Any = node
            if not call.args:
                raise AssertionError(f"{module.where(node)}: a KubeClient call without a path")
            for path in module.paths(call.args[0]):
                group, resource = resource_of(path)
                permissions.add((group, resource, call.func.attr))
    return permissions


def kopf_permissions(module: _Module) -> set[Permission]:
    permissions = set()
    for node in ast.walk(module.tree):
        if not isinstance(node, ast.Call):
            continue
        dotted = ast.unparse(node.func)
        kind = dotted.removeprefix("kopf.on.").removeprefix("kopf.")
        if not dotted.startswith("kopf.") or kind not in KOPF_CHANGING | KOPF_OBSERVING:
            continue
        coordinates: list[str] = []
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                coordinates += list(getattr(module.module, ast.unparse(arg.value)))
            elif isinstance(arg, ast.Constant):
                coordinates.append(arg.value)
        group, _version, plural = coordinates[:3]
        permissions |= {(group, plural, "list"), (group, plural, "watch"), ("", "events", "create")}
        if kind in KOPF_CHANGING:
            permissions.add((group, plural, "patch"))
    return permissions


def owner_permissions(module: _Module) -> set[Permission]:
    """``update`` on the owners' ``finalizers`` for each function building a blocking owner reference."""
    permissions = set()
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Dict) and any(
            isinstance(k, ast.Constant) and k.value == "blockOwnerDeletion" for k in node.keys
        ):
            function = module.enclosing(node, ast.FunctionDef)
            reference = getattr(module.module, function.name)({"metadata": {"name": "x", "uid": "u"}})
            group = reference["apiVersion"].rpartition("/")[0]
            plural = resource_of(BUILDERS["object_path"]("x"))[1] if group == resource_module.GROUP else None
            assert plural, f"{module.where(node)}: an owner reference to an unknown kind {reference['kind']}"
            permissions.add((group, f"{plural}/finalizers", "update"))
    return permissions


def permissions_of(files: Iterable[Path], package_root: Path) -> set[Permission]:
    """Everything the source ``files`` (modules under ``package_root``'s parent) ask of the API server."""
    permissions: set[Permission] = set()
    for path in files:
        relative = path.relative_to(package_root.parent).with_suffix("")
        module = _Module(path, ".".join(relative.parts))
        permissions |= client_permissions(module) | kopf_permissions(module) | owner_permissions(module)
    return permissions
