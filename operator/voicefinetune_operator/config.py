"""The operator's configuration: the original service's settings (``Settings``) plus what only the operator needs (``VFT_*``).

The Helm chart fills these variables from values.yaml through a ConfigMap; every one has a default that works in
a cluster where the chart installed the operator.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from voicefinetune.settings import Settings, parse_bool, read_env_fields

GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_GPU_TOLERATIONS = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
INFERENCE_PORT = 8000
# The Service in front of the operator's progress receiver (the chart names it so unless told otherwise).
OPERATOR_SERVICE = "voicefinetune-operator"

# Settings of the original service the trainer and inference pods get as plain values (the S3 keys come from the Secret instead).
POD_SETTINGS = (
    "device",
    "use_flash_attn",
    "s3_bucket",
    "s3_endpoint_url",
    "s3_region",
    "base_model",
    "voice_design_model",
    "tiny_models",
    "train_recipe",
    "train_fit_check",
)


def _json(value: str) -> Any:
    return json.loads(value) if value.strip() else None


def _names(value: str) -> tuple[str, ...]:
    """Comma-separated names, blanks dropped."""
    return tuple(name.strip() for name in value.split(",") if name.strip())


def secret_setting_env(setting: str, secret: str, key: str) -> list[dict[str, Any]]:
    """The variable of the ``Settings`` field ``setting`` as a reference to ``key`` in the Secret ``secret`` (nothing
    without a Secret): the value never appears in a spec."""
    if not secret:
        return []
    ref = {"name": secret, "key": key}
    return [{"name": Settings.env_name(setting), "valueFrom": {"secretKeyRef": ref}}]


@dataclass(frozen=True)
class OperatorConfig:
    settings: Settings = field(default_factory=Settings)
    namespace: str = field(default="default", metadata={"env": "VFT_OPERATOR_NAMESPACE"})
    trainer_image: str = field(
        default="ghcr.io/voicefinetune/trainer:0.1.0", metadata={"env": "VFT_TRAINER_IMAGE"}
    )
    inference_image: str = field(
        default="ghcr.io/voicefinetune/inference:0.1.0", metadata={"env": "VFT_INFERENCE_IMAGE"}
    )
    image_pull_policy: str = field(default="IfNotPresent", metadata={"env": "VFT_IMAGE_PULL_POLICY"})
    # spec.trainerImage values a VoiceFinetune may ask for: comma-separated prefixes (empty: only trainer_image).
    trainer_image_prefixes: str = field(default="", metadata={"env": "VFT_TRAINER_IMAGE_PREFIXES"})
    # Whether a VoiceFinetune's spec.nodeSelector and spec.tolerations may replace the operator's.
    allow_scheduling_overrides: bool = field(
        default=False, metadata={"env": "VFT_ALLOW_SCHEDULING_OVERRIDES", "parse": parse_bool}
    )
    # False: the pods get no S3 keys (an endpoint that needs none, or credentials from a workload identity).
    s3_keys: bool = field(default=True, metadata={"env": "VFT_S3_KEYS", "parse": parse_bool})
    # The Secret holding the S3 keys, and the keys in it.
    s3_secret: str = field(default="voicefinetune-s3", metadata={"env": "VFT_S3_SECRET"})
    s3_secret_access_key: str = field(default="E2E_ACCESS_KEY", metadata={"env": "VFT_S3_SECRET_ACCESS_KEY"})
    s3_secret_secret_key: str = field(default="E2E_SECRET_KEY", metadata={"env": "VFT_S3_SECRET_SECRET_KEY"})
    # The Secret holding VFT_API_KEY for the inference pods (empty: no API key), and the key in it.
    api_key_secret: str = field(default="", metadata={"env": "VFT_API_KEY_SECRET"})
    api_key_secret_key: str = field(default="VFT_API_KEY", metadata={"env": "VFT_API_KEY_SECRET_KEY"})
    # The Secret holding VFT_WEBHOOK_SECRET for the inference pods (empty: unsigned webhooks), and the key in it.
    webhook_key_secret: str = field(default="", metadata={"env": "VFT_WEBHOOK_KEY_SECRET"})
    webhook_key_secret_key: str = field(
        default="VFT_WEBHOOK_SECRET", metadata={"env": "VFT_WEBHOOK_KEY_SECRET_KEY"}
    )
    # Training Jobs
    train_gpus: int = field(default=1, metadata={"env": "VFT_TRAIN_GPUS", "parse": int})
    train_node_selector: dict[str, str] = field(
        default_factory=dict, metadata={"env": "VFT_TRAIN_NODE_SELECTOR", "parse": _json}
    )
    train_tolerations: list[dict[str, Any]] = field(
        default_factory=lambda: list(DEFAULT_GPU_TOLERATIONS),
        metadata={"env": "VFT_TRAIN_TOLERATIONS", "parse": _json},
    )
    train_cpu: str = field(default="4", metadata={"env": "VFT_TRAIN_CPU"})
    # A CPU limit (empty: none; a namespace's limits.cpu quota needs one) and a PriorityClass for training pods.
    train_cpu_limit: str = field(default="", metadata={"env": "VFT_TRAIN_CPU_LIMIT"})
    train_priority_class: str = field(default="", metadata={"env": "VFT_TRAIN_PRIORITY_CLASS"})
    train_memory: str = field(default="32Gi", metadata={"env": "VFT_TRAIN_MEMORY"})
    train_shm_size: str = field(default="8Gi", metadata={"env": "VFT_TRAIN_SHM_SIZE"})
    train_scratch_size: str = field(
        default="30Gi", metadata={"env": "VFT_TRAIN_SCRATCH_SIZE"}
    )  # see values.yaml
    train_backoff_limit: int = field(default=1, metadata={"env": "VFT_TRAIN_BACKOFF_LIMIT", "parse": int})
    train_deadline_seconds: int = field(
        default=86400, metadata={"env": "VFT_TRAIN_DEADLINE_SECONDS", "parse": int}
    )
    train_ttl_seconds: int = field(default=86400, metadata={"env": "VFT_TRAIN_TTL_SECONDS", "parse": int})
    train_service_account: str = field(default="", metadata={"env": "VFT_TRAIN_SERVICE_ACCOUNT"})
    # The trainer and inference pods' UID, GID and fsGroup (the chart's podSecurityContext); unset: the image's USER,
    # or what the platform assigns (OpenShift's restricted profile).
    run_as_user: int | None = field(default=None, metadata={"env": "VFT_RUN_AS_USER", "parse": int})
    run_as_group: int | None = field(default=None, metadata={"env": "VFT_RUN_AS_GROUP", "parse": int})
    fs_group: int | None = field(default=None, metadata={"env": "VFT_FS_GROUP", "parse": int})
    # Progress receiver: trainer pods POST to {progress_base_url}/progress/{namespace}/{name}.
    port: int = field(default=8081, metadata={"env": "VFT_OPERATOR_PORT", "parse": int})
    progress_base_url: str = field(default="", metadata={"env": "VFT_PROGRESS_BASE_URL"})
    # The progress tokens' key; without one, the Secret (in the operator's namespace) that keeps it; with neither,
    # a file under the data dir (see progress_key.py).
    secret_key: str = field(default="", repr=False, metadata={"env": "VFT_OPERATOR_SECRET_KEY"})
    key_secret: str = field(default="", metadata={"env": "VFT_OPERATOR_KEY_SECRET"})
    progress_interval: float = field(default=2.0, metadata={"env": "VFT_PROGRESS_INTERVAL", "parse": float})
    # The inference Deployment and Service the operator keeps.
    inference_name: str = field(default="voicefinetune-inference", metadata={"env": "VFT_INFERENCE_NAME"})
    inference_replicas: int = field(default=1, metadata={"env": "VFT_INFERENCE_REPLICAS", "parse": int})
    inference_gpus: int = field(default=1, metadata={"env": "VFT_INFERENCE_GPUS", "parse": int})
    inference_memory: str = field(default="32Gi", metadata={"env": "VFT_INFERENCE_MEMORY"})
    inference_cache_pvc: str = field(default="", metadata={"env": "VFT_INFERENCE_CACHE_PVC"})
    inference_node_selector: dict[str, str] = field(
        default_factory=dict, metadata={"env": "VFT_INFERENCE_NODE_SELECTOR", "parse": _json}
    )
    inference_tolerations: list[dict[str, Any]] = field(
        default_factory=lambda: list(DEFAULT_GPU_TOLERATIONS),
        metadata={"env": "VFT_INFERENCE_TOLERATIONS", "parse": _json},
    )
    inference_service_account: str = field(default="", metadata={"env": "VFT_INFERENCE_SERVICE_ACCOUNT"})
    manage_inference: bool = field(
        default=True, metadata={"env": "VFT_MANAGE_INFERENCE", "parse": parse_bool}
    )
    repair_interval: float = field(default=30.0, metadata={"env": "VFT_REPAIR_INTERVAL", "parse": float})
    resync_interval: float = field(default=60.0, metadata={"env": "VFT_RESYNC_INTERVAL", "parse": float})
    load_timeout: float = field(default=900.0, metadata={"env": "VFT_LOAD_TIMEOUT", "parse": float})
    # The operator's own Deployment: owner of the inference objects, so `helm uninstall` removes them too.
    owner_deployment: str = field(default="", metadata={"env": "VFT_OWNER_DEPLOYMENT"})
    # Private registries: Secrets (in each namespace the pods run in) named on training Jobs and inference pods.
    image_pull_secrets: tuple[str, ...] = field(
        default=(), metadata={"env": "VFT_IMAGE_PULL_SECRETS", "parse": _names}
    )
    # Two or more operator replicas: only the holder of this coordination.k8s.io Lease reconciles.
    leader_election: bool = field(default=True, metadata={"env": "VFT_LEADER_ELECTION", "parse": parse_bool})
    lease_name: str = field(default="voicefinetune-operator", metadata={"env": "VFT_LEASE_NAME"})
    lease_duration: float = field(default=15.0, metadata={"env": "VFT_LEASE_DURATION", "parse": float})
    # An HPA (or KEDA) owns the inference Deployment's replicas: the operator sets them at creation only.
    inference_autoscaling: bool = field(
        default=False, metadata={"env": "VFT_INFERENCE_AUTOSCALING", "parse": parse_bool}
    )
    inference_cpu: str = field(default="1", metadata={"env": "VFT_INFERENCE_CPU"})
    # The same for the inference pods.
    inference_cpu_limit: str = field(default="", metadata={"env": "VFT_INFERENCE_CPU_LIMIT"})
    inference_priority_class: str = field(default="", metadata={"env": "VFT_INFERENCE_PRIORITY_CLASS"})
    # The Helm release: its instance label joins the inference selector (two releases in one namespace).
    instance: str = field(default="", metadata={"env": "VFT_INSTANCE"})
    # Set by `vft operator` when it serves more than one namespace: ids outside the home namespace are qualified
    # (``cluster.identity``); serving one namespace, every id is the bare resource name.
    namespaced_ids: bool = False
    # In a pod (KUBERNETES_SERVICE_HOST set): trainers reach the progress receiver through the operator's Service;
    # elsewhere (a developer's machine, tests) through 127.0.0.1.
    in_cluster: bool = False

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> OperatorConfig:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {"settings": Settings.from_env(env), **read_env_fields(cls, env)}
        if "namespace" not in values:
            values["namespace"] = env.get("POD_NAMESPACE") or values["settings"].namespace
        values["in_cluster"] = bool(env.get("KUBERNETES_SERVICE_HOST"))
        values.update(overrides)
        return cls(**values)  # an empty secret_key is found when the operator starts (progress_key.py)

    @property
    def inference_url(self) -> str:
        """Base URL of the inference Service; its host names every ready replica (a headless Service)."""
        return self.settings.inference_url or (
            f"http://{self.inference_name}.{self.namespace}.svc.cluster.local:{INFERENCE_PORT}"
        )

    @property
    def progress_url_base(self) -> str:
        if self.progress_base_url:
            return self.progress_base_url.rstrip("/")
        if self.in_cluster:
            return f"http://{OPERATOR_SERVICE}.{self.namespace}.svc:{self.port}"
        return f"http://127.0.0.1:{self.port}"

    def pod_settings_env(self) -> list[dict[str, str]]:
        """The original service's settings that trainer and inference pods share with the operator, as container env."""
        return [{"name": name, "value": value} for name, value in self.settings.to_env(POD_SETTINGS).items()]

    def pull_secrets(self) -> list[dict[str, str]]:
        """``imagePullSecrets`` of the pods the operator makes."""
        return [{"name": name} for name in self.image_pull_secrets]

    def api_key_env(self) -> list[dict[str, Any]]:
        """VFT_API_KEY as a reference to its Secret (nothing when the inference servers need no key)."""
        return secret_setting_env("api_key", self.api_key_secret, self.api_key_secret_key)

    def webhook_secret_env(self) -> list[dict[str, Any]]:
        """VFT_WEBHOOK_SECRET as a reference to its Secret (nothing when webhooks go unsigned)."""
        return secret_setting_env("webhook_secret", self.webhook_key_secret, self.webhook_key_secret_key)

    def s3_secret_env(self, secret: str | None = None) -> list[dict[str, Any]]:
        """S3 keys as references to the Secret (``secret``: its copy in another namespace): never in a spec."""
        if not self.s3_keys:
            return []
        return [
            {
                "name": env_name,
                "valueFrom": {"secretKeyRef": {"name": secret or self.s3_secret, "key": key}},
            }
            for env_name, key in (
                (Settings.env_name("s3_access_key"), self.s3_secret_access_key),
                (Settings.env_name("s3_secret_key"), self.s3_secret_secret_key),
            )
        ]
