"""The facade on a cluster: jobs are VoiceFinetune resources, inference calls go to the inference replicas.

``KubernetesBackend`` implements ``JobBackend``: ``create`` makes a VoiceFinetune (its name is the job_id; an
uploaded dataset goes to S3 first), ``delete`` deletes it (the operator's finalizer does the cleanup), and
``get``/``list`` answer from a cache that one list+watch keeps current, so reading jobs costs no API call.

``inference_proxy_router`` forwards the seed's inference endpoints. A voice always goes to the same replica:
rendezvous hashing of the job_id over the replicas the inference Service's name resolves to (see
``voicefinetune.operator.routing``; the operator preloads the voice on that same replica). Voice design and
voice clone are keyed by their model, so each of those models stays warm on one replica too.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import uuid
from pathlib import Path
from typing import Any

import httpx
from fastapi import APIRouter, HTTPException, Request, Response

from ..metrics import exposition
from ..operator.crd import API_VERSION, KIND, object_path, request_to_spec
from ..operator.kube import Conflict, KubeClient
from ..operator.routing import EndpointResolver, rendezvous_order
from ..schemas import FinetuneConfig, FinetuneRequest, Job, Progress
from ..settings import Settings
from ..storage import Storage, StorageNotConfigured, build_key
from .backend import DatasetNotFound, JobConflict

log = logging.getLogger(__name__)

SYNC_TIMEOUT = 10.0
DEFAULTS = {name: field.default for name, field in FinetuneRequest.model_fields.items()}
PROGRESS_FIELDS = {"stage": "stage", "epoch": "epoch", "totalEpochs": "total_epochs", "step": "step",
                   "loss": "loss", "globalStep": "global_step"}


def uploaded_dataset_key(job_id: str) -> str:
    return build_key("datasets", "uploads", job_id, "dataset.zip")


def _timestamp(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def job_from_resource(resource: dict[str, Any], flash_attn: bool) -> Job:
    """The seed's job shape for a VoiceFinetune (phase -> lowercase status; no phase yet = queued)."""
    meta, spec, status = resource["metadata"], resource.get("spec") or {}, resource.get("status") or {}
    progress = status.get("progress")
    updated = [status.get("completedAt"), (progress or {}).get("updatedAt")]
    updated += [c.get("lastTransitionTime") for c in status.get("conditions") or []]
    stamps = [stamp for stamp in map(_timestamp, updated) if stamp is not None]
    return Job(
        job_id=meta["name"],
        status=(status.get("phase") or "Queued").lower(),
        speaker_name=spec.get("speakerName", DEFAULTS["speaker_name"]),
        progress=Progress(**{snake: progress[camel] for camel, snake in PROGRESS_FIELDS.items() if camel in progress})
        if progress and progress.get("stage") else None,
        inference_url=status.get("inferenceUrl"),
        checkpoint_path=status.get("checkpointPath"),
        error=status.get("error"),
        config=FinetuneConfig(
            num_epochs=spec.get("numEpochs", DEFAULTS["num_epochs"]),
            batch_size=spec.get("batchSize", DEFAULTS["batch_size"]),
            lr=spec.get("lr", DEFAULTS["lr"]),
            flash_attn=flash_attn,
        ),
        dataset_s3_key=spec.get("datasetS3Key"),
        book_id=spec.get("bookId"),
        chapter_id=spec.get("chapterId"),
        character_id=spec.get("characterId"),
        resume_job_id=spec.get("resumeJobId"),
        created_at=_timestamp(meta.get("creationTimestamp")),
        updated_at=max(stamps) if stamps else _timestamp(meta.get("creationTimestamp")),
    )


def _revision(resource: dict[str, Any]) -> int:
    try:
        return int(resource["metadata"].get("resourceVersion") or 0)
    except ValueError:
        return 0


class ResourceCache:
    """The namespace's VoiceFinetunes by name, as the last list/watch event showed them."""

    def __init__(self) -> None:
        self._items: dict[str, dict[str, Any]] = {}

    def replace(self, items: list[dict[str, Any]]) -> None:
        self._items = {item["metadata"]["name"]: item for item in items}

    def apply(self, event_type: str, item: dict[str, Any]) -> None:
        name = item["metadata"]["name"]
        if event_type == "DELETED":
            self._items.pop(name, None)
        else:
            self.offer(item)

    def offer(self, item: dict[str, Any]) -> None:
        """Keep ``item`` unless the cache holds a newer version of it."""
        current = self._items.get(item["metadata"]["name"])
        if current is None or _revision(item) >= _revision(current):
            self._items[item["metadata"]["name"]] = item

    def forget(self, name: str) -> None:
        self._items.pop(name, None)

    def get(self, name: str) -> dict[str, Any] | None:
        item = self._items.get(name)
        # A resource being deleted is gone for the API (the operator's finalizer is only cleaning up).
        return None if item is None or item["metadata"].get("deletionTimestamp") else item

    def all(self) -> list[dict[str, Any]]:
        live = [item for item in self._items.values() if not item["metadata"].get("deletionTimestamp")]
        return sorted(live, key=lambda item: (item["metadata"].get("creationTimestamp") or "", item["metadata"]["name"]))


class KubernetesBackend:
    def __init__(self, settings: Settings, kubeconfig: str | None = None):
        self.settings = settings
        self.namespace = settings.namespace
        self.kubeconfig = kubeconfig
        self.storage = Storage(settings)
        self.cache = ResourceCache()
        self.kube: KubeClient | None = None
        self._synced = asyncio.Event()
        self._watcher: asyncio.Task | None = None

    # --- lifecycle -------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self.kube = await KubeClient.connect(self.kubeconfig)
        self._synced = asyncio.Event()
        self._watcher = asyncio.create_task(self._watch(), name="voicefinetune-watch")

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        if self.kube is not None:
            await self.kube.close()

    async def _watch(self) -> None:
        """List, then watch from the list's resourceVersion; on any break, list again (after a backoff)."""
        path = object_path(self.namespace)
        backoff = 0.5
        while True:
            try:
                listing = await self.kube.list(path)
                self.cache.replace(listing.get("items") or [])
                revision = (listing.get("metadata") or {}).get("resourceVersion")
                self._synced.set()
                while True:  # a watch the server ended normally is resumed without a new list
                    async for event in self.kube.watch(path, revision):
                        kind, item = event.get("type"), event.get("object") or {}
                        if kind == "ERROR":
                            raise RuntimeError(f"watch error: {item.get('message')}")
                        revision = (item.get("metadata") or {}).get("resourceVersion") or revision
                        if kind in ("ADDED", "MODIFIED", "DELETED"):
                            self.cache.apply(kind, item)
                    backoff = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("watching VoiceFinetunes in %s failed (%s); listing again in %.1f s",
                            self.namespace, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    async def _cached(self) -> ResourceCache:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._synced.wait(), SYNC_TIMEOUT)
        return self.cache

    # --- JobBackend ------------------------------------------------------------------------------------------

    async def create(self, request: FinetuneRequest, upload: Path | None = None) -> Job:
        if request.job_id and (existing := await self._existing(request)):
            return existing
        job_id = request.job_id or uuid.uuid4().hex[:12]
        if upload is not None:
            key = await self._store_upload(job_id, upload)
            request = request.model_copy(update={"dataset_s3_key": key})
        else:
            await self._check_dataset_key(request.dataset_s3_key)
        resource = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {
                "name": job_id,
                "namespace": self.namespace,
                "labels": {"app.kubernetes.io/created-by": "voicefinetune-facade"},
            },
            "spec": request_to_spec(request.model_copy(update={"job_id": None})),
        }
        try:
            created = await self.kube.create(object_path(self.namespace), resource)
        except Conflict:
            if request.job_id and (existing := await self._existing(request)):
                return existing
            raise JobConflict(f"job {job_id!r} exists already: use another job_id") from None
        self.cache.offer(created)
        return job_from_resource(created, self.settings.use_flash_attn)

    async def _existing(self, request: FinetuneRequest) -> Job | None:
        """The job of a client-chosen id, when it exists with the same parameters (a repeated call)."""
        resource = (await self._cached()).get(request.job_id) or await self.kube.get(
            object_path(self.namespace, request.job_id)
        )
        if resource is None or resource["metadata"].get("deletionTimestamp"):
            return None
        wanted = request_to_spec(request.model_copy(update={"job_id": None}))
        have = resource.get("spec") or {}
        uploaded = str(request.dataset_s3_key).startswith("upload:")
        if any(have.get(key) != value for key, value in wanted.items() if not (uploaded and key == "datasetS3Key")):
            raise JobConflict(
                f"job {request.job_id!r} already exists with different parameters: use another job_id, "
                "or DELETE /jobs/{job_id} first"
            )
        return job_from_resource(resource, self.settings.use_flash_attn)

    async def _store_upload(self, job_id: str, upload: Path) -> str:
        from .dataset_checks import check_dataset_zip

        await asyncio.to_thread(check_dataset_zip, upload)
        self._require_storage()
        key = uploaded_dataset_key(job_id)
        await asyncio.to_thread(self.storage.upload_file, upload, key)
        return key

    async def _check_dataset_key(self, key: str) -> None:
        self._require_storage()
        if not await asyncio.to_thread(self.storage.exists, key):
            raise DatasetNotFound(
                f"dataset_s3_key {key!r} does not exist in bucket {self.storage.bucket!r}: upload the zip there first"
            )

    def _require_storage(self) -> None:
        if not self.storage.configured:
            raise StorageNotConfigured(
                "S3 storage is not configured (E2E_ACCESS_KEY / E2E_SECRET_KEY): on Kubernetes the training Job "
                "reads its dataset from S3"
            )

    async def get(self, job_id: str) -> Job | None:
        resource = (await self._cached()).get(job_id)
        return None if resource is None else job_from_resource(resource, self.settings.use_flash_attn)

    async def list(self) -> list[Job]:
        return [job_from_resource(item, self.settings.use_flash_attn) for item in (await self._cached()).all()]

    async def delete(self, job_id: str) -> bool:
        """Delete the resource; the operator stops its Job and unloads the voice before it goes."""
        deleted = await self.kube.delete(object_path(self.namespace, job_id), propagation="Background")
        self.cache.forget(job_id)
        return deleted


# --- inference proxy --------------------------------------------------------------------------------------------

PROXY_TIMEOUT = httpx.Timeout(600.0, connect=10.0)
FORWARDED_HEADERS = ("content-type", "accept")
RETURNED_HEADERS = ("content-type", "content-disposition")
# (method, path, routing): a voice key routes to one replica ("{job_id}" = the path's job), "*" goes to every
# replica (GPU settings apply to all), "" to the first replica.
ROUTES: list[tuple[str, str, str]] = [
    ("POST", "/infer/{job_id}", "{job_id}"),
    ("POST", "/infer/{job_id}/batch", "{job_id}"),
    ("POST", "/voice-design", "voice-design"),
    ("POST", "/voice-clone", "voice-clone"),
    ("POST", "/voice-clone/batch", "voice-clone"),
    ("GET", "/gpu/status", ""),
    ("POST", "/gpu/unload", "*"),
    ("PUT", "/gpu/config", "*"),
    ("GET", "/gpu/cleanup", "*"),
    ("GET", "/storage/status", ""),
    ("GET", "/storage/list/{job_id}", ""),
    ("GET", "/ops/averages", ""),
    ("GET", "/ops/history", ""),
    ("GET", "/ops/running", ""),
]


class InferenceProxy:
    def __init__(self, settings: Settings):
        self.resolver = EndpointResolver(
            settings.inference_url or f"http://voicefinetune-inference.{settings.namespace}.svc.cluster.local:8000"
        )
        self._clients: dict[int, httpx.AsyncClient] = {}

    def _client(self) -> httpx.AsyncClient:
        loop_id = id(asyncio.get_running_loop())
        client = self._clients.get(loop_id)
        if client is None or client.is_closed:
            client = self._clients[loop_id] = httpx.AsyncClient(timeout=PROXY_TIMEOUT)
        return client

    async def replicas(self, key: str) -> list[str]:
        """Replicas to try for ``key``, the owner first (the next ones only if it cannot be reached)."""
        endpoints = await self.resolver.endpoints()
        if not endpoints:
            raise HTTPException(503, "the inference service has no ready replica")
        return rendezvous_order(key, endpoints) if key and key != "*" else sorted(endpoints)

    async def forward(self, request: Request, key: str) -> Response:
        body = await request.body()
        headers = {name: value for name, value in request.headers.items() if name.lower() in FORWARDED_HEADERS}
        replicas = await self.replicas(key)
        if key == "*":
            answers = await asyncio.gather(*(self._send(r, request, body, headers) for r in replicas))
            return answers[0]
        errors = []
        for replica in replicas:
            try:
                return await self._send(replica, request, body, headers)
            except httpx.TransportError as exc:  # the replica went away: the next one in rendezvous order takes it
                errors.append(f"{replica}: {exc!r}")
        raise HTTPException(503, f"the inference service is unreachable: {'; '.join(errors)}")

    async def _send(self, replica: str, request: Request, body: bytes, headers: dict[str, str]) -> Response:
        answer = await self._client().request(
            request.method, f"{replica}{request.url.path}", params=request.query_params, content=body, headers=headers
        )
        returned = {name: value for name, value in answer.headers.items() if name.lower() in RETURNED_HEADERS}
        return Response(content=answer.content, status_code=answer.status_code,
                        headers={**returned, "X-VFT-Replica": replica})


def inference_proxy_router(settings: Settings, job_gate=None) -> APIRouter:
    """The seed's inference endpoints, forwarded to the inference replicas. ``/infer/{job_id}*`` first passes
    ``job_gate`` (404 unknown job, 409 not ready), by default the facade's gate over the app's job backend."""
    proxy = InferenceProxy(settings)
    router = APIRouter()

    async def gate(request: Request, job_id: str) -> None:
        if job_gate is not None:
            await job_gate(job_id)
            return
        backend = getattr(request.app.state, "backend", None)
        if backend is not None:
            from .app import make_job_gate

            await make_job_gate(backend)(job_id)

    def add(method: str, path: str, routing: str) -> None:
        async def endpoint(request: Request) -> Response:
            job_id = request.path_params.get("job_id")
            if path.startswith("/infer/"):
                await gate(request, job_id)
            key = job_id if routing == "{job_id}" else routing
            return await proxy.forward(request, key)

        tag = path.strip("/").split("/")[0]
        router.add_api_route(path, endpoint, methods=[method], tags=[tag], summary=f"{method} {path} (forwarded)",
                             name=f"proxy_{method.lower()}_{path}")

    for method, path, routing in ROUTES:
        add(method, path, routing)

    @router.get("/metrics", tags=["ops"], summary="Prometheus metrics of the facade")
    async def metrics() -> Response:
        body, content_type = exposition()
        return Response(content=body, media_type=content_type)

    return router
