"""The inference server: many fine-tuned voices on one GPU (`vft inference`, or mounted in the facade).

`InferenceService` does the work, `build_router(service, job_gate)` exposes it, `create_app(settings)` serves it
alone. See ``service.py`` for how the parts fit.
"""

from voicefinetune_inference.app import create_app
from voicefinetune_inference.routes import build_router
from voicefinetune_inference.serving.service import InferenceService

__all__ = ["InferenceService", "build_router", "create_app"]
