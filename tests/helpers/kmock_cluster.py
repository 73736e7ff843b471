"""A KMock Kubernetes emulator good enough for Kopf, kubectl and the API clients, on its own thread and loop.

KMock 0.8's ``KubernetesEmulator`` keeps objects, lists, watches, patches and deletes with finalizers. This
subclass adds what a real API server does and Kopf relies on (see shared/notes/test-infra.md):

1. ``uid``, ``resourceVersion``, ``creationTimestamp``, ``generation`` and the namespace on create; a new
   ``resourceVersion`` on every change; ``generation`` bumped when the spec changes;
2. a failed JSON-patch ``test`` answered with 422 (Kopf retries), not 500;
3. lists with the current ``resourceVersion``, ``kind`` and ``apiVersion``; watches that do not replay objects at
   or below ``?resourceVersion`` (stale replays stall Kopf) and that miss nothing between list and watch;
4. 201 for a create (the sync client returns None for a custom-object create answered with 200);
5. ``/api/v1/namespaces[/{name}]`` parsed as the cluster-scoped Namespace resource (KMock's parser crashes on it);
6. no request history: KMock matches each request by scanning every request it ever served (quadratic: 200
   resources took minutes); only the requests in flight are kept;
7. a merge patch carrying ``metadata.resourceVersion`` is a precondition (409 Conflict when the object moved on);
8. equality-based ``labelSelector`` on lists and watches (``a=b``, ``a!=b``, ``a``, ``!a``), each one recorded in
   ``selectors`` by plural, so tests can see what a client asked the server to filter;
9. RBAC when a test sets ``authorizer`` (``tests.helpers.rbac``): a request no rule allows is answered 403 and
   recorded in ``denied``.

Like KMock itself it runs no controllers: tests write Job and Pod status themselves.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import itertools
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import kmock
import yaml
from kmock._internal import k8s_dicts, parsing, rendering

from tests.helpers.rbac import Access, Authorizer, access_of

CREATE, UPDATE, DELETE = kmock.action.CREATE, kmock.action.UPDATE, kmock.action.DELETE


_parse_path = parsing.parse_path


def _parse_path_with_namespaces(path: str) -> parsing.ParsedPath:
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and len(parts) <= 4:
        return parsing.ParsedPath(
            group="", version="v1", plural="namespaces", name=parts[3] if len(parts) == 4 else None
        )
    return _parse_path(path)


parsing.parse_path = _parse_path_with_namespaces


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def crd_resources(crd_path: Path) -> dict[str, dict[str, Any]]:
    """KMock resource declarations ('group/version/plural' -> info) read from a CRD manifest."""
    crd = yaml.safe_load(crd_path.read_text())
    names = crd["spec"]["names"]
    declared = {}
    for version in crd["spec"]["versions"]:
        declared[f"{crd['spec']['group']}/{version['name']}/{names['plural']}"] = {
            "kind": names["kind"],
            "singular": names.get("singular", names["plural"]),
            "namespaced": crd["spec"]["scope"] == "Namespaced",
            "shortnames": names.get("shortNames", []),
            "categories": names.get("categories", []),
            "subresources": list(version.get("subresources", {})),
            "verbs": ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"],
        }
    return declared


@attrs.define(kw_only=True)
class ClusterEmulator(kmock.KubernetesEmulator):
    _revisions: Any = attrs.field(factory=lambda: itertools.count(1), init=False)
    _revision: int = attrs.field(default=0, init=False)
    _in_flight: set[int] = attrs.field(factory=set, init=False)
    # (action, plural) -> how many such requests were served: what tests can count instead of the history
    served: collections.Counter = attrs.field(factory=collections.Counter, init=False)
    # plural -> the label selectors its lists and watches carried
    selectors: collections.defaultdict = attrs.field(factory=lambda: collections.defaultdict(set), init=False)
    # None: every request is allowed (no RBAC)
    authorizer: Authorizer | None = attrs.field(default=None, init=False)
    denied: list[Access] = attrs.field(factory=list, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.resources.load_bundled()

    def declare(self, resources: dict[str, dict[str, Any]]) -> None:
        for key, info in resources.items():
            self.resources[key] = info

    def _next_revision(self) -> str:
        self._revision = next(self._revisions)
        return str(self._revision)

    def _kind_of(self, resource: Any) -> str | None:
        # Not .get(): looking a resource up with [] declares it.
        return self.resources[resource].kind if resource in self.resources else None  # noqa: SIM401

    def _current(self, request: rendering.Request) -> k8s_dicts.Object | None:
        for (resource, namespace, name), obj in self._objects.items():
            if resource == request.resource and namespace == request.namespace and name == request.name:
                return None if obj.deleted else obj
        return None

    def _forget_served_requests(self) -> None:
        self._requests[:] = [r for r in self._requests if id(r) in self._in_flight]
        for payload in self._payloads:
            payload._requests.clear()

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        self._in_flight.add(id(request))
        try:
            return await self._handle_stamped(request)
        finally:
            self._in_flight.discard(id(request))

    async def _handle_stamped(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        self._forget_served_requests()
        if request.resource is not None and request.resource.plural and self.authorizer is not None:
            self._authorize(request, self.authorizer)
        if request.resource is not None:
            self.served[
                (str(request.action.value if request.action else request.method), request.resource.plural)
            ] += 1
            if request.params.get("labelSelector"):
                self.selectors[request.resource.plural].add(request.params["labelSelector"])
        if request.resource is not None:
            if request.action == CREATE and isinstance(request.data, dict):
                self._stamp_new(request)
            elif request.action == UPDATE and request.name is not None:
                self._stamp_change(request)
            elif request.action == DELETE and request.name is not None:
                await self._mark_deleting(request)
        response = await super()._handle(request)
        if request.action == CREATE and response.status == 200:
            response.set_status(201)
        return response

    def _authorize(self, request: rendering.Request, authorizer: Authorizer) -> None:
        resource = request.resource
        access = access_of(
            str(request.method.value),
            resource.group or "",
            resource.plural,
            request.subresource,
            request.namespace,
            request.name,
            request.params,
        )
        if not authorizer.allows(access):
            self.denied.append(access)
            scope = f' in the namespace "{access.namespace}"' if access.namespace else " at the cluster scope"
            raise kmock.KubernetesError(
                403,
                "Forbidden",
                f'cannot {access.verb} resource "{access.resource}" in API group "{access.group}"{scope}',
            )

    def _stamp_new(self, request: rendering.Request) -> None:
        meta = request.data.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:5]}"
        if request.namespace and not meta.get("namespace"):
            meta["namespace"] = request.namespace
        meta.update(uid=str(uuid.uuid4()), resourceVersion=self._next_revision(), creationTimestamp=_now())
        meta["generation"] = 1
        kind = self._kind_of(request.resource)
        if kind:
            request.data.setdefault("kind", kind)
            group, version = request.resource.group, request.resource.version
            request.data.setdefault("apiVersion", f"{group}/{version}" if group else version)

    def _stamp_change(self, request: rendering.Request) -> None:
        current = self._current(request)
        if current is None:
            return
        raw = current.raw
        revision = self._next_revision()
        spec_changed = request.subresource is None
        if isinstance(request.data, list):
            for op in request.data:
                if op.get("op") == "test":
                    try:
                        jsonpatch.apply_patch(raw, [op])
                    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                        raise kmock.KubernetesError(
                            422, "Invalid", f"the test operation failed: {exc}"
                        ) from exc
            spec_changed = spec_changed and any(
                str(op.get("path", "")).startswith("/spec") for op in request.data
            )
            request.data.append({"op": "add", "path": "/metadata/resourceVersion", "value": revision})
            if spec_changed:
                generation = int(raw.get("metadata", {}).get("generation", 1)) + 1
                request.data.append({"op": "add", "path": "/metadata/generation", "value": generation})
        elif isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            expected = meta.get("resourceVersion")
            if expected is not None and str(expected) != str(raw.get("metadata", {}).get("resourceVersion")):
                raise kmock.KubernetesError(
                    409,
                    "Conflict",
                    "the object has been modified; please apply your "
                    "changes to the latest version and try again",
                )
            meta["resourceVersion"] = revision
            if spec_changed and "spec" in request.data and request.data["spec"] != raw.get("spec"):
                meta["generation"] = int(raw.get("metadata", {}).get("generation", 1)) + 1

    async def _mark_deleting(self, request: rendering.Request) -> None:
        """Finalizers present: set deletionTimestamp with a new resourceVersion, as the API server does."""
        async with self._lock:
            current = self._current(request)
            if current is None:
                return
            meta = current.raw.get("metadata", {})
            if meta.get("deletionTimestamp") or not meta.get("finalizers"):
                return
            current.patch(
                {"metadata": {"deletionTimestamp": _now(), "resourceVersion": self._next_revision()}}
            )
            await self._buses[request.resource].put({"type": "MODIFIED", "object": current.raw})

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        payload = await super()._serve_list(request)
        resource = request.resource
        kind = self._kind_of(resource)
        payload["metadata"]["resourceVersion"] = str(self._revision)
        selector = request.params.get("labelSelector") or ""
        payload["items"] = [item for item in payload["items"] if _selected(item, selector)]
        payload["kind"] = f"{kind}List" if kind else "List"
        payload["apiVersion"] = f"{resource.group}/{resource.version}" if resource.group else resource.version
        return payload

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[rendering.Payload]:
        yield b""
        since = int(request.params.get("resourceVersion") or 0)
        bus = self._buses[request.resource]
        mark = await bus.mark()  # before the snapshot: nothing between the two is lost
        try:
            async with self._lock:
                snapshot = [
                    obj.raw
                    for (resource, namespace, name), obj in self._objects.items()
                    if not obj.deleted and self._matches(request, resource, namespace, name)
                ]
            selector = request.params.get("labelSelector") or ""
            for raw in snapshot:
                if int(raw.get("metadata", {}).get("resourceVersion") or 0) > since and _selected(
                    raw, selector
                ):
                    yield {"type": "ADDED", "object": raw}
            async for event in bus.stream(since=mark):
                meta = event.get("object", {}).get("metadata", {})
                if self._matches(
                    request, request.resource, meta.get("namespace"), meta.get("name")
                ) and _selected(event.get("object", {}), selector):
                    yield event
        finally:
            await bus.unmark(mark)

    @staticmethod
    def _matches(request: rendering.Request, resource: Any, namespace: str | None, name: str | None) -> bool:
        return (
            resource == request.resource
            and (request.namespace is None or namespace == request.namespace)
            and (request.name is None or name == request.name)
        )


class EmulatorThread:
    """Runs a ``ClusterEmulator`` on 127.0.0.1 in its own thread and event loop (sharing the loop with Kopf or
    the test would slow both down). ``url`` is its address; ``kubeconfig(path)`` writes a kubeconfig for it."""

    def __init__(self, resources: dict[str, dict[str, Any]] | None = None):
        self.resources = resources or {}
        self.loop = asyncio.new_event_loop()
        self.emulator: ClusterEmulator | None = None
        self.url = ""
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kmock", daemon=True)
        self._error: BaseException | None = None

    def start(self) -> EmulatorThread:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with ClusterEmulator() as emulator, kmock.Server(emulator) as server:
            emulator.declare(self.resources)
            self.emulator = emulator
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def call(self, function: Callable[[ClusterEmulator], Any]) -> Any:
        """Run ``function(emulator)`` on the emulator's loop (its state is not thread-safe) and return the result."""

        async def run() -> Any:
            return function(self.emulator)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(120)

    def objects(self, resource: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Copies of the live objects of ``resource`` ('group/version/plural' or 'v1/plural')."""
        wanted = kmock.resource(resource)

        def collect(emulator: ClusterEmulator) -> list[dict[str, Any]]:
            return [
                _deepcopy(obj.raw)
                for (res, ns, _), obj in emulator.objects.items()
                if res == wanted and not obj.deleted and (namespace is None or ns == namespace)
            ]

        return self.call(collect)

    def kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
                    "users": [{"name": "kmock", "user": {"token": "kmock"}}],
                    "contexts": [
                        {
                            "name": "kmock",
                            "context": {"cluster": "kmock", "user": "kmock", "namespace": namespace},
                        }
                    ],
                    "current-context": "kmock",
                }
            )
        )
        return path


def _selected(obj: dict[str, Any], selector: str) -> bool:
    """Whether ``obj``'s labels satisfy an equality-based label selector (empty: everything)."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in filter(None, (part.strip() for part in selector.split(","))):
        if "!=" in term:
            key, value = (side.strip() for side in term.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = (side.strip() for side in term.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _deepcopy(value: Any) -> Any:
    import copy

    return copy.deepcopy(value)
