"""Internal errors answered without their text: the exception is logged under a short error id and the client
gets only that id (exception messages can carry paths, keys or internals)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from .openai_compat import error_body_for

log = logging.getLogger(__name__)


def internal_error_message(exc: BaseException, what: str = "the request") -> str:
    """Log ``exc`` with a fresh error id; the message for the client, naming only that id."""
    error_id = uuid.uuid4().hex[:12]
    log.error("internal error %s in %s", error_id, what, exc_info=(type(exc), exc, exc.__traceback__))
    return f"internal error while handling {what} (error id {error_id}; details are in the server log)"


def install_internal_error_handler(app: Any) -> None:
    """Any exception no route handled becomes a JSON 500 with an error id instead of a bare 'Internal Server Error'
    (in OpenAI's error shape on the OpenAI-compatible routes)."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    async def handler(request: Request, exc: Exception) -> JSONResponse:
        message = internal_error_message(exc, f"{request.method} {request.url.path}")
        return JSONResponse(error_body_for(request.url.path, 500, message), status_code=500)

    app.add_exception_handler(Exception, handler)
