"""Which parts of a VoiceFinetune's spec may override the operator's configuration: a trainer image only from the
allowed prefixes (default: exactly the operator's own trainer image), node selectors and tolerations only when the
operator allows scheduling overrides. Anyone who may create a VoiceFinetune could otherwise run any image, anywhere."""

from __future__ import annotations

from voicefinetune_operator.config import OperatorConfig
from voicefinetune_operator.crd import InvalidSpec, Scheduling


def allowed_image_prefixes(config: OperatorConfig) -> tuple[str, ...]:
    prefixes = tuple(p.strip() for p in config.trainer_image_prefixes.split(",") if p.strip())
    return prefixes or (config.trainer_image,)


def check_overrides(scheduling: Scheduling, config: OperatorConfig) -> None:
    """InvalidSpec naming the field when the spec asks for what the configuration does not allow."""
    image = scheduling.trainer_image
    if image and image != config.trainer_image:
        prefixes = allowed_image_prefixes(config)
        if not any(image.startswith(prefix) for prefix in prefixes):
            raise InvalidSpec(
                f"spec.trainerImage {image!r} is not allowed: images must start with one of {', '.join(prefixes)} "
                "(the operator's VFT_TRAINER_IMAGE_PREFIXES, the chart's training.allowedImagePrefixes)"
            )
    if not config.allow_scheduling_overrides:
        for field, value in (
            ("nodeSelector", scheduling.node_selector),
            ("tolerations", scheduling.tolerations),
        ):
            if value is not None:
                raise InvalidSpec(
                    f"spec.{field} is not allowed: this operator does not let a VoiceFinetune choose its nodes "
                    "(VFT_ALLOW_SCHEDULING_OVERRIDES, the chart's training.allowSchedulingOverrides)"
                )
