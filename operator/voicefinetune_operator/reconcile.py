"""What the operator does for a VoiceFinetune, independent of Kopf: make its training Job, follow the Job to an
outcome, load the trained voice for inference, and clean up on deletion. Every step is idempotent, so a
restarted operator or a re-delivered event repeats it harmlessly."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from voicefinetune.cluster.client import Conflict, KubeClient, KubeError, job_path, pod_path
from voicefinetune.cluster.resource import object_path
from voicefinetune.lifecycle import DEFAULT_SPEAKER_NAME, TERMINAL_PHASES
from voicefinetune.public_text import PublicText
from voicefinetune.storage import Storage, checkpoint_prefix
from voicefinetune_operator.config import OperatorConfig
from voicefinetune_operator.crd import InvalidSpec, read_spec
from voicefinetune_operator.events import WARNING
from voicefinetune_operator.fleet import InferenceFleet, InferenceUnavailable, VoiceRejected
from voicefinetune_operator.jobs import (
    DATA_DIR,
    JOB_NAME_LABELS,
    belongs_to_job,
    build_training_job,
    job_duration,
    job_name,
    job_outcome,
    owned_by,
    resource_of,
    resource_voice,
    termination_message,
)
from voicefinetune_operator.metrics import JOB_SECONDS, PhaseCounter
from voicefinetune_operator.overrides import check_overrides
from voicefinetune_operator.placement import placement
from voicefinetune_operator.pods import pod_problem, pod_running
from voicefinetune_operator.progress import ProgressThrottle, progress_path, progress_token
from voicefinetune_operator.progress_secret import ensure_progress_secret
from voicefinetune_operator.status import FAILED, LOADING, PREPARING, QUEUED, READY, now
from voicefinetune_operator.status_writer import StatusWriter

from .s3_secret import SecretUnavailable, ensure_s3_secret

log = logging.getLogger(__name__)

LOAD_RETRY_MAX = 60.0


class RetryLater(RuntimeError):
    """A step could not finish now (the API or the inference Service is unreachable); try it again soon."""


def _key(body: dict[str, Any]) -> tuple[str, str]:
    return body["metadata"]["namespace"], body["metadata"]["name"]


class Reconciler:
    def __init__(
        self,
        config: OperatorConfig,
        kube: KubeClient,
        writer: StatusWriter,
        fleet: InferenceFleet,
        throttle: ProgressThrottle,
        phases: PhaseCounter,
    ):
        self.config = config
        self.kube = kube
        self.writer = writer
        self.fleet = fleet
        self.throttle = throttle
        self.phases = phases
        # (namespace, name) -> (voice id, speaker name, S3 prefix) of the Ready voices
        self.ready_voices: dict[tuple[str, str], tuple[str, str, str]] = {}
        self._loading: dict[tuple[str, str], asyncio.Task] = {}
        self._timed_jobs: set[str] = set()
        self._since = now()  # Jobs that ended before this process started were timed by an earlier one

    def voice(self, namespace: str, name: str) -> str:
        """The resource's voice id and checkpoint name (``cluster.identity``)."""
        return resource_voice(self.config, namespace, name)

    # --- training Job ---------------------------------------------------------------------------------------

    async def ensure_training_job(self, body: dict[str, Any]) -> None:
        """Create the resource's Job, or adopt the one a previous run created (same deterministic name)."""
        namespace, name = _key(body)
        status = body.get("status") or {}
        if status.get("phase") in (*TERMINAL_PHASES, LOADING):
            return
        try:
            spec = read_spec(body)
            check_overrides(spec.scheduling, self.config)
        except InvalidSpec as exc:
            await self.writer.transition(
                namespace, name, phase=FAILED, reason="InvalidSpec", message=str(exc)
            )
            return
        try:
            s3_secret = await ensure_s3_secret(self.kube, self.config, body)
        except SecretUnavailable as exc:
            await self.writer.transition(
                namespace, name, phase=FAILED, reason="S3SecretUnavailable", message=str(exc)
            )
            return
        progress_url = f"{self.config.progress_url_base}{progress_path(namespace, name)}"
        token = progress_token(self.config.secret_key, namespace, name)
        manifest = build_training_job(
            body,
            spec,
            config=self.config,
            progress_url=progress_url,
            progress_secret=await ensure_progress_secret(self.kube, body, token),
            s3_secret=s3_secret,
        )
        job = manifest["metadata"]["name"]
        try:
            await self.kube.create(job_path(namespace), manifest)
            reason, message = "JobCreated", f"created training Job {job}"
        except Conflict:
            existing = await self.kube.get(job_path(namespace, job))
            if existing is None:
                raise RetryLater(f"Job {job} existed a moment ago and is gone now") from None
            if not owned_by(existing, body):
                await self.writer.transition(
                    namespace,
                    name,
                    phase=FAILED,
                    reason="JobNameTaken",
                    message=f"a Job named {job} exists and does not belong to this resource: delete it, or "
                    "recreate this resource under another name",
                )
                return
            reason, message = "JobAdopted", f"training Job {job} exists already (made before a restart)"
        extra = {"jobName": job}
        if not status.get("startedAt"):
            extra["startedAt"] = now()
        await self.writer.transition(
            namespace, name, phase=QUEUED, reason=reason, message=message, extra=extra
        )

    async def on_job(self, event_type: str, job: dict[str, Any]) -> None:
        """A training Job changed: its outcome moves the resource on (Preparing, Loading or Failed)."""
        name = resource_of(job)
        namespace = job.get("metadata", {}).get("namespace")
        if not name or not namespace:
            return
        outcome = job_outcome(job)
        job_name_ = job["metadata"]["name"]
        if event_type == "DELETED":
            if outcome.state in ("pending", "running"):
                await self.writer.transition(
                    namespace,
                    name,
                    phase=FAILED,
                    reason="JobDeleted",
                    message=f"the training Job {job_name_} was deleted before it finished",
                )
            return
        self._time_job(job, outcome.state)
        if outcome.state == "succeeded":
            if await self.writer.transition(
                namespace,
                name,
                phase=LOADING,
                reason="JobSucceeded",
                message=f"training Job {job_name_} succeeded; loading the voice",
            ):
                self.start_loading(namespace, name)
        elif outcome.state == "failed":
            pods = (await self.kube.list(pod_path(namespace), f"batch.kubernetes.io/job-name={job_name_}"))[
                "items"
            ]
            said = termination_message([pod for pod in pods if belongs_to_job(pod, job_name_)])
            message = "; ".join(part for part in (outcome.message, said) if part) or outcome.reason
            # The trainer's last log lines speak of its pod's data folder and of the S3 endpoint.
            public = PublicText(Path(DATA_DIR), self.config.settings.s3_endpoint_url)
            await self.writer.transition(
                namespace, name, phase=FAILED, reason=outcome.reason, message=public(message)
            )
        elif outcome.state == "running":
            await self.writer.transition(
                namespace,
                name,
                phase=PREPARING,
                reason="PodRunning",
                message=f"training Job {job_name_} is running",
            )

    async def on_pod(self, event_type: str, pod: dict[str, Any]) -> None:
        """A training pod changed: a pod that cannot start (waiting on a Secret or an image, unschedulable) is said
        on its resource at once; a pod that runs again clears that."""
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        job_name_ = next((labels[key] for key in JOB_NAME_LABELS if labels.get(key)), None)
        problem = pod_problem(pod)
        if event_type == "DELETED" or not job_name_ or (problem is None and not pod_running(pod)):
            return
        job = await self.kube.get(job_path(meta["namespace"], job_name_))
        name = resource_of(job) if job is not None else None
        if not name:
            return
        if problem is not None:
            await self.writer.flag(meta["namespace"], name, reason=problem[0], message=problem[1])
        else:
            await self.writer.unflag(meta["namespace"], name)

    def _time_job(self, job: dict[str, Any], state: str) -> None:
        uid = job["metadata"].get("uid", job["metadata"]["name"])
        if state not in ("succeeded", "failed") or uid in self._timed_jobs:
            return
        status = job.get("status") or {}
        ended = status.get("completionTime") or max(
            (c.get("lastTransitionTime") or "" for c in status.get("conditions") or []), default=""
        )
        if ended and ended < self._since:
            self._timed_jobs.add(uid)
            return
        seconds = job_duration(job)
        if seconds is not None:
            self._timed_jobs.add(uid)
            JOB_SECONDS.labels(state).observe(seconds)

    # --- voice loading --------------------------------------------------------------------------------------

    def start_loading(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        task = self._loading.get(key)
        if task is None or task.done():
            self._loading[key] = asyncio.create_task(
                self._load(namespace, name), name=f"load-{namespace}-{name}"
            )

    async def _load(self, namespace: str, name: str) -> None:
        """Register and preload the voice; retried (with backoff) while the inference Service cannot take it, for at
        most ``VFT_LOAD_TIMEOUT`` seconds: then the resource is ``Failed`` (LoadFailed) with the last error."""
        delay = 2.0
        warned = False
        deadline = time.monotonic() + self.config.load_timeout
        while True:
            body = await self.kube.get(object_path(namespace, name))
            status = (body or {}).get("status") or {}
            if body is None or body["metadata"].get("deletionTimestamp") or status.get("phase") != LOADING:
                return
            voice, speaker, prefix = self._voice_record(body)
            where = placement(self.config, voice, body)
            try:
                replica = await self.fleet.register(voice, speaker, prefix, key=where.key)
            except VoiceRejected as exc:
                await self.writer.transition(
                    namespace, name, phase=FAILED, reason="LoadFailed", message=str(exc)
                )
                return
            except (InferenceUnavailable, KubeError) as exc:
                if time.monotonic() >= deadline:
                    await self.writer.transition(
                        namespace,
                        name,
                        phase=FAILED,
                        reason="LoadFailed",
                        message=f"the voice did not load within VFT_LOAD_TIMEOUT={self.config.load_timeout:g} s: {exc}",
                    )
                    return
                if not warned:
                    await self.writer.events.post(
                        body, kind=WARNING, reason="LoadRetrying", message=f"{exc}; retrying"
                    )
                    warned = True
                log.warning("loading voice %s/%s: %s; retrying in %.0f s", namespace, name, exc, delay)
                await asyncio.sleep(max(0.0, min(delay, deadline - time.monotonic())))
                delay = min(delay * 2, LOAD_RETRY_MAX)
                continue
            await self.writer.transition(
                namespace,
                name,
                phase=READY,
                reason="VoiceLoaded",
                message=where.loaded_message(replica),
                extra={"inferenceUrl": f"/infer/{voice}", "checkpointPath": prefix, **where.status(replica)},
            )
            return

    # --- resume, observe, delete ----------------------------------------------------------------------------

    async def resume(self, body: dict[str, Any]) -> None:
        """After an operator restart: pick up where the resource stands, by the same rule as the periodic resync
        (a Job that vanished while no operator watched fails the resource; it is never silently retrained)."""
        await self.resync(body)

    async def resync(self, body: dict[str, Any]) -> None:
        """Check an unfinished resource against its Job, in case a Job event was missed. A resource that never got
        a phase gets (or adopts) its Job; one whose Job is gone is ``Failed`` (JobDeleted): retrying is the user's
        choice (delete and create it again), never an automatic retrain."""
        namespace, name = _key(body)
        status = body.get("status") or {}
        phase = status.get("phase")
        if phase == LOADING:
            self.start_loading(namespace, name)
            return
        if phase in TERMINAL_PHASES:
            return
        if phase is None:
            await self.ensure_training_job(body)
            return
        job_name_ = status.get("jobName") or job_name(name)
        job = await self.kube.get(job_path(namespace, job_name_))
        if job is not None:
            await self.on_job("MODIFIED", job)
        else:
            await self.writer.transition(
                namespace,
                name,
                phase=FAILED,
                reason="JobDeleted",
                message=f"the training Job {job_name_} is gone before it finished (deleted while the operator was "
                "away, or garbage-collected); delete and recreate the resource to train again",
            )

    def observe(self, event_type: str, body: dict[str, Any]) -> None:
        """Every watch event of a resource: the per-phase gauge and the registry of Ready voices."""
        key = _key(body)
        status = body.get("status") or {}
        if event_type == "DELETED":
            self.phases.gone(*key)
            self.ready_voices.pop(key, None)
            return
        self.phases.seen(*key, status.get("phase"))
        if status.get("phase") == READY and not body["metadata"].get("deletionTimestamp"):
            self.ready_voices[key] = self._voice_record(body)
        else:
            self.ready_voices.pop(key, None)

    def _voice_record(self, body: dict[str, Any]) -> tuple[str, str, str]:
        """(voice id, speaker name, checkpoint prefix) the inference servers know the resource's voice by."""
        voice = self.voice(*_key(body))
        speaker = (body.get("spec") or {}).get("speakerName") or DEFAULT_SPEAKER_NAME
        return voice, speaker, ((body.get("status") or {}).get("checkpointPath") or checkpoint_prefix(voice))

    async def delete(self, body: dict[str, Any], last_attempt: bool) -> None:
        """Stop the Job (its pods go with it), take the voice out of the inference caches, and delete the S3
        checkpoint only when ``deletionPolicy: Delete`` says so."""
        namespace, name = _key(body)
        status = body.get("status") or {}
        task = self._loading.pop((namespace, name), None)
        if task is not None:
            task.cancel()
        job = status.get("jobName") or job_name(name)
        if await self.kube.delete(job_path(namespace, job), propagation="Background"):
            log.info("%s/%s: deleted training Job %s", namespace, name, job)
        voice = self.voice(namespace, name)
        if status.get("phase") in (LOADING, READY):
            try:
                await self.fleet.unregister(voice)
            except InferenceUnavailable as exc:
                if not last_attempt:
                    raise RetryLater(f"cannot unregister voice {name}: {exc}") from exc
                log.warning("%s/%s: giving up unregistering the voice: %s", namespace, name, exc)
        if (body.get("spec") or {}).get("deletionPolicy") == "Delete":
            removed = await asyncio.to_thread(self._delete_checkpoint, voice)
            log.info(
                "%s/%s: deleted %d checkpoint objects (deletionPolicy: Delete)", namespace, name, removed
            )
        self.writer.forget(namespace, name)
        self.throttle.forget(namespace, name)
        self.ready_voices.pop((namespace, name), None)

    def _delete_checkpoint(self, voice: str) -> int:
        return Storage(self.config.settings).delete_prefix(checkpoint_prefix(voice) + "/")

    async def close(self) -> None:
        for task in self._loading.values():
            task.cancel()
        await asyncio.gather(*self._loading.values(), return_exceptions=True)
