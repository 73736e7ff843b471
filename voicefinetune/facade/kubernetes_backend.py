"""The facade's job backend on a cluster: jobs are VoiceFinetune resources.

``KubernetesBackend`` implements ``JobBackend``: ``create`` makes a VoiceFinetune (its name is the job_id; an
uploaded dataset goes to S3 first), ``delete`` deletes it (the operator's finalizer does the cleanup), and
``get``/``list`` answer from a cache that one list+watch keeps current, so reading jobs costs no API call.
The inference calls are forwarded by ``inference_proxy``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from pathlib import Path
from typing import Any

from ..cluster.client import Conflict, KubeClient
from ..cluster.resource import API_VERSION, KIND, object_path, request_to_spec, trains_with_flash_attention
from ..cluster.routing import recorded_key
from ..lifecycle import DEFAULTS, progress_from_status, status_of
from ..schemas import FinetuneConfig, FinetuneRequest, Job, Progress
from ..settings import Settings
from ..storage import Storage, StorageNotConfigured, build_key
from ..webhooks import check_webhook_url
from .backend import JobConflict, new_job_id
from .dataset_checks import check_dataset_key, check_dataset_zip

log = logging.getLogger(__name__)

SYNC_TIMEOUT = 10.0


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
    """The REST job shape of a VoiceFinetune (phase -> lowercase status; no phase yet = queued)."""
    meta, spec, status = resource["metadata"], resource.get("spec") or {}, resource.get("status") or {}
    progress = status.get("progress")
    updated = [status.get("completedAt"), (progress or {}).get("updatedAt")]
    updated += [c.get("lastTransitionTime") for c in status.get("conditions") or []]
    stamps = [stamp for stamp in map(_timestamp, updated) if stamp is not None]
    return Job(
        job_id=meta["name"],
        status=status_of(status.get("phase")),
        speaker_name=spec.get("speakerName", DEFAULTS["speaker_name"]),
        progress=Progress(**progress_from_status(progress)) if progress and progress.get("stage") else None,
        inference_url=status.get("inferenceUrl"),
        checkpoint_path=status.get("checkpointPath"),
        error=status.get("error"),
        config=FinetuneConfig(
            num_epochs=spec.get("numEpochs", DEFAULTS["num_epochs"]),
            batch_size=spec.get("batchSize", DEFAULTS["batch_size"]),
            lr=spec.get("lr", DEFAULTS["lr"]),
            flash_attn=flash_attn,
            method=spec.get("method", DEFAULTS["method"]),
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
        return sorted(
            live, key=lambda item: (item["metadata"].get("creationTimestamp") or "", item["metadata"]["name"])
        )


class KubernetesBackend:
    def __init__(self, settings: Settings, kubeconfig: str | None = None):
        self.settings = settings
        self.namespace = settings.namespace
        self.kubeconfig = kubeconfig
        self.storage = Storage(settings)
        self.cache = ResourceCache()
        self._kube: KubeClient | None = None
        self._synced = asyncio.Event()
        self._watcher: asyncio.Task | None = None

    @property
    def kube(self) -> KubeClient:
        if self._kube is None:
            raise RuntimeError("the Kubernetes backend is not started")
        return self._kube

    def _flash_attn(self, resource: dict[str, Any]) -> bool:
        """``config.flash_attn``: whether the resource's training uses flash attention, not just the setting."""
        settings = self.settings
        return trains_with_flash_attention(
            resource,
            use_flash_attn=settings.use_flash_attn,
            device=settings.device,
            tiny=settings.tiny_models,
        )

    # --- lifecycle -------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._kube = await KubeClient.connect(self.kubeconfig)
        self._synced = asyncio.Event()
        self._watcher = asyncio.create_task(self._watch(), name="voicefinetune-watch")

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        if self._kube is not None:
            await self._kube.close()

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
                log.warning(
                    "watching VoiceFinetunes in %s failed (%s); listing again in %.1f s",
                    self.namespace,
                    exc,
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    async def _cached(self) -> ResourceCache:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._synced.wait(), SYNC_TIMEOUT)
        return self.cache

    # --- JobBackend ------------------------------------------------------------------------------------------

    async def create(self, request: FinetuneRequest, upload: Path | None = None) -> Job:
        await check_webhook_url(request.webhook_url, self.settings)
        if request.job_id and (existing := await self._existing(request)):
            return existing
        job_id = request.job_id or new_job_id()
        if upload is not None:
            key = await self._store_upload(job_id, upload)
            request = request.model_copy(update={"dataset_s3_key": key})
        else:
            self._require_storage()
            await check_dataset_key(self.storage, request.dataset_s3_key)
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
        return job_from_resource(created, self._flash_attn(created))

    async def _existing(self, request: FinetuneRequest) -> Job | None:
        """The job of a client-chosen id, when it exists with the same parameters (a repeated call)."""
        if not request.job_id:
            return None
        resource = (await self._cached()).get(request.job_id) or await self.kube.get(
            object_path(self.namespace, request.job_id)
        )
        if resource is None or resource["metadata"].get("deletionTimestamp"):
            return None
        wanted = request_to_spec(request.model_copy(update={"job_id": None}))
        have = resource.get("spec") or {}
        uploaded = str(request.dataset_s3_key).startswith("upload:")
        if any(
            have.get(key) != value
            for key, value in wanted.items()
            if not (uploaded and key == "datasetS3Key")
        ):
            raise JobConflict.different_parameters(request.job_id)
        return job_from_resource(resource, self._flash_attn(resource))

    async def _store_upload(self, job_id: str, upload: Path) -> str:
        await asyncio.to_thread(check_dataset_zip, upload)
        self._require_storage()
        key = uploaded_dataset_key(job_id)
        await asyncio.to_thread(self.storage.upload_file, upload, key)
        return key

    def _require_storage(self) -> None:
        if not self.storage.configured:
            raise StorageNotConfigured(
                "S3 storage is not configured (E2E_ACCESS_KEY / E2E_SECRET_KEY): on Kubernetes the training Job "
                "reads its dataset from S3"
            )

    async def get(self, job_id: str) -> Job | None:
        resource = (await self._cached()).get(job_id)
        return None if resource is None else job_from_resource(resource, self._flash_attn(resource))

    async def routing_key(self, voice: str) -> str:
        """The rendezvous key of a voice, named by its job id or (as `/v1/audio/speech` allows) by the speaker
        name of exactly one voice: the key the operator recorded when it preloaded it (a LoRA voice's base model
        and book), else the name as given."""
        cache = await self._cached()
        resource = cache.get(voice)
        if resource is not None:
            return recorded_key(voice, resource)
        # as the inference server resolves a name: among the voices it serves (Ready ones)
        named = [
            item
            for item in cache.all()
            if str(item.get("spec", {}).get("speakerName", "")).lower() == voice.lower()
            and (item.get("status") or {}).get("phase") == "Ready"
        ]
        if len(named) != 1:
            return voice
        return recorded_key(named[0]["metadata"]["name"], named[0])

    async def list(self) -> list[Job]:
        return [job_from_resource(item, self._flash_attn(item)) for item in (await self._cached()).all()]

    async def delete(self, job_id: str) -> bool:
        """Delete the resource; the operator stops its Job and unloads the voice before it goes."""
        deleted = await self.kube.delete(object_path(self.namespace, job_id), propagation="Background")
        self.cache.forget(job_id)
        return deleted
