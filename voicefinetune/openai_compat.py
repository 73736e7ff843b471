"""What the parts share of the OpenAI-compatible API: OpenAI's preset voice names (each a stock description for the
VoiceDesign model; the inference server speaks them, the facade's proxy routes them with ``/voice-design``), and
OpenAI's error shape ``{"error": {"message", "type", "param", "code"}}``, answered on every ``/v1/`` path."""

from __future__ import annotations

from typing import Any

OPENAI_PREFIX = "/v1/"
DESIGN_VOICE = "design"  # the VoiceDesign model itself: the request's `instructions` describe the voice
CLONE_VOICE = (
    "clone"  # extension: the Base model in the voice of the request's reference audio (as /voice-clone)
)
# OpenAI's speech voices (its API reference, and the `openai` client's `voice` literal).
PRESET_VOICES = {
    "alloy": "A neutral, balanced adult voice, clear and even, at a moderate pace.",
    "ash": "A low, slightly raspy adult male voice, relaxed and confident.",
    "ballad": "A soft, melodic adult male voice with a gentle British lilt, warm and emotive.",
    "coral": "A bright, friendly adult female voice, warm and upbeat.",
    "echo": "A calm, resonant adult male voice, measured and soft-spoken.",
    "fable": "An expressive storyteller's voice with a light British accent, lively and animated.",
    "nova": "A young, energetic female voice, crisp and cheerful.",
    "onyx": "A deep, authoritative adult male voice, slow and steady.",
    "sage": "A gentle, thoughtful adult voice, soft and reassuring.",
    "shimmer": "A clear, airy female voice, light and smooth.",
    "verse": "A versatile, expressive adult male voice, dynamic and engaging.",
    "marin": "A natural, polished adult female voice, clear and conversational.",
    "cedar": "A natural, grounded adult male voice, warm and steady.",
}
DESIGN_VOICES = frozenset({DESIGN_VOICE, *PRESET_VOICES})  # the voices the VoiceDesign model speaks


def error_body(
    message: str, *, status: int = 400, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def is_openai_path(path: str) -> bool:
    return path.startswith(OPENAI_PREFIX)


def error_body_for(path: str, status: int, message: str, *, code: str | None = None) -> dict[str, Any]:
    """An error body for a request to ``path``: OpenAI's shape on the OpenAI-compatible routes, ``detail`` elsewhere."""
    if is_openai_path(path):
        return error_body(message, status=status, code=code)
    return {"detail": message}


def install_openai_http_errors(app: Any) -> None:
    """HTTP errors no route answered itself (404 unknown path, 405 wrong method, 503 from a proxy...) in OpenAI's
    shape on ``/v1/`` paths; elsewhere FastAPI's ``{"detail": ...}`` as before."""
    from fastapi.exception_handlers import http_exception_handler
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    async def handler(request: Request, exc: HTTPException):
        if not is_openai_path(request.url.path):
            return await http_exception_handler(request, exc)
        message = str(exc.detail)
        if exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path} (see the Allow header)"
        return JSONResponse(
            error_body(message, status=exc.status_code), status_code=exc.status_code, headers=exc.headers
        )

    app.add_exception_handler(HTTPException, handler)
