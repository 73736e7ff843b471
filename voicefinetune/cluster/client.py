"""A small dict-in, dict-out Kubernetes API client over ``kubernetes_asyncio``'s authenticated transport.

Objects stay plain dicts (as Kopf hands them to handlers) instead of generated model classes: fewer conversions,
and one client for built-in and custom resources. Used by the operator and by the facade's Kubernetes backend.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
_OBJECT = {code: "object" for code in (200, 201, 202)}


class KubeError(RuntimeError):
    """An API call failed; ``status`` is the HTTP status (0 when the server could not be reached)."""

    def __init__(self, status: int, reason: str, message: str = ""):
        super().__init__(f"{status} {reason}: {message}" if message else f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.message = message


class Conflict(KubeError):
    """409: the object exists already (create) or changed meanwhile."""


def job_path(namespace: str, name: str | None = None, subresource: str | None = None) -> str:
    return _path("/apis/batch/v1", namespace, "jobs", name, subresource)


def pod_path(namespace: str, name: str | None = None) -> str:
    return _path("/api/v1", namespace, "pods", name)


def deployment_path(namespace: str, name: str | None = None) -> str:
    return _path("/apis/apps/v1", namespace, "deployments", name)


def service_path(namespace: str, name: str | None = None) -> str:
    return _path("/api/v1", namespace, "services", name)


def secret_path(namespace: str, name: str | None = None) -> str:
    return _path("/api/v1", namespace, "secrets", name)


def lease_path(namespace: str, name: str | None = None) -> str:
    return _path("/apis/coordination.k8s.io/v1", namespace, "leases", name)


def event_path(namespace: str) -> str:
    return _path("/api/v1", namespace, "events")


def _path(
    prefix: str, namespace: str, plural: str, name: str | None = None, subresource: str | None = None
) -> str:
    path = f"{prefix}/namespaces/{namespace}/{plural}"
    if name:
        path += f"/{name}"
    if subresource:
        path += f"/{subresource}"
    return path


async def load_configuration(kubeconfig: str | None = None) -> client.Configuration:
    """In a pod: its ServiceAccount. Elsewhere: ``kubeconfig``, else $KUBECONFIG, else ~/.kube/config."""
    configuration = client.Configuration()
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=configuration)
    else:
        path = kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
        await config.load_kube_config(config_file=path, client_configuration=configuration)
    return configuration


class KubeClient:
    def __init__(self, configuration: client.Configuration):
        self.api = client.ApiClient(configuration)

    @classmethod
    async def connect(cls, kubeconfig: str | None = None) -> KubeClient:
        return cls(await load_configuration(kubeconfig))

    async def close(self) -> None:
        await self.api.close()

    async def get(self, path: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return await self._request("GET", path)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(self, path: str, label_selector: str | None = None) -> dict[str, Any]:
        """The list object (``items`` and ``metadata.resourceVersion``)."""
        query = [("labelSelector", label_selector)] if label_selector else None
        return await self._request("GET", path, query=query)

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._request("POST", path, body=body)

    async def patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any] | None:
        """A JSON merge patch; None when the object is gone."""
        try:
            return await self._request("PATCH", path, body=patch, content_type=MERGE_PATCH)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def delete(self, path: str, propagation: str | None = None) -> bool:
        """False when there was nothing to delete."""
        body = (
            {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation}
            if propagation
            else None
        )
        try:
            await self._request("DELETE", path, body=body)
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def watch(
        self, path: str, resource_version: str | None = None, timeout_seconds: int = 300
    ) -> AsyncIterator[dict[str, Any]]:
        """Watch events ({type, object}) from ``resource_version`` on, until the server ends the stream (after
        about ``timeout_seconds``; a silent connection is dropped a little later)."""
        query = [("watch", "true"), ("allowWatchBookmarks", "true"), ("timeoutSeconds", str(timeout_seconds))]
        if resource_version:
            query.append(("resourceVersion", resource_version))
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=timeout_seconds + 30)
        response = await self._request("GET", path, query=query, preload=False, timeout=timeout)
        try:
            while True:
                line = await response.content.readline()
                if not line:
                    return
                line = line.strip()
                if line:
                    yield json.loads(line)
        finally:
            response.release()

    async def _request(
        self,
        method: str,
        path: str,
        query: Sequence[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str | None = None,
        preload: bool = True,
        timeout: float | aiohttp.ClientTimeout = 30.0,
    ) -> Any:
        headers = {"Accept": "application/json", "Content-Type": content_type or "application/json"}
        try:
            return await self.api.call_api(
                path,
                method,
                query_params=query or [],
                header_params=headers,
                body=body,
                response_types_map=_OBJECT,
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _preload_content=preload,
                _request_timeout=timeout,
            )
        except ApiException as exc:
            raise _error(exc) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubeError(0, "Unreachable", str(exc)) from exc


def _error(exc: ApiException) -> KubeError:
    message = ""
    try:
        message = json.loads(exc.body or "{}").get("message", "")
    except (ValueError, AttributeError):
        message = str(exc.body or "")[:300]
    kind = Conflict if exc.status == 409 else KubeError
    return kind(exc.status or 0, exc.reason or "", message)
