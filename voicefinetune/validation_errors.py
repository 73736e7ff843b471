"""The 422 both servers answer for a request FastAPI could not validate: ``detail`` (and ``message``) is one readable
line per field to fix with the value received, FastAPI's structured list stays under ``errors``; neither echoes more
than a short prefix of anything the client sent."""

from __future__ import annotations

import json
from typing import Any

from .input_echo import ECHO_CHARS, short_repr


def short_input(value: Any) -> Any:
    """``value`` as JSON, or a prefix of its text when that is longer than ``ECHO_CHARS``."""
    if isinstance(value, bytes | bytearray):  # a body that was not JSON; decode no more of it than is shown
        value = bytes(value[: 4 * (ECHO_CHARS + 1)]).decode("utf-8", errors="replace")
    encoded = _jsonable(value)
    text = encoded if isinstance(encoded, str) else json.dumps(encoded)
    return encoded if len(text) <= ECHO_CHARS else f"{text[:ECHO_CHARS]}…"


def invalid_json_message(message: str, document: Any, position: int) -> str:
    """E.g. ``request body is not valid JSON: Expecting value at line 1 column 13``."""
    if isinstance(document, bytes):
        document = document.decode("utf-8", errors="replace")
    if isinstance(document, str):
        error = json.JSONDecodeError(message, document, position)  # it works out the line and column
        return f"request body is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}"
    return f"request body is not valid JSON: {message} at character {position}"


def error_line(error: dict[str, Any], body: Any = None) -> str:
    """One error as ``field: message (got value)``; the value is left out where the message already names it."""
    if error.get("type") == "json_invalid":
        position = next((part for part in reversed(error.get("loc", ())) if isinstance(part, int)), 0)
        return invalid_json_message(
            str(error.get("ctx", {}).get("error", "JSON decode error")), body, position
        )
    field = ".".join(
        str(_short(part)) for part in error.get("loc", ()) if part not in ("body", "query", "path")
    )
    message = _short_message(error)
    value = error.get("input")
    if error.get("type") != "missing" and isinstance(value, str | int | float) and not _names(message, value):
        message += f" (got {short_repr(value)})"
    return f"{field}: {message}" if field else message


def validation_error_body(errors: list[dict[str, Any]], body: Any = None) -> dict[str, Any]:
    lines = [error_line(error, body) for error in errors]
    structured = [
        {
            "type": error.get("type"),
            "loc": [_short(part) for part in error.get("loc", ())],
            "msg": _short_message(error),
            "input": short_input(error.get("input")),
        }
        for error in errors
    ]
    message = "; ".join(lines) or "invalid request"
    return {"detail": message, "message": message, "errors": structured}


def install_validation_error_handler(app: Any) -> None:
    """Answer every ``RequestValidationError`` of ``app`` (a FastAPI app) with ``validation_error_body``."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.requests import Request
    from fastapi.responses import JSONResponse

    async def handler(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content=validation_error_body(list(exc.errors()), exc.body))

    app.add_exception_handler(RequestValidationError, handler)


def _names(message: str, value: str | int | float) -> bool:
    # A custom check's message that already quotes the text received ("unsupported language 'Klingon'"); a number is
    # always repeated, since "greater than 0" says nothing about what was sent.
    return isinstance(value, str) and short_repr(value) in message


def _short_message(error: dict[str, Any]) -> str:
    """Pydantic's message without its "Value error, " prefix, a custom check's quoted input cut to a prefix."""
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    value = error.get("input")
    if isinstance(value, str) and len(repr(value)) > ECHO_CHARS:
        message = message.replace(repr(value), short_repr(value))
    return message


def _short(part: Any) -> Any:
    return part if not isinstance(part, str) or len(part) <= ECHO_CHARS else f"{part[:ECHO_CHARS]}…"


def _jsonable(value: Any) -> Any:
    from fastapi.encoders import jsonable_encoder

    try:
        return jsonable_encoder(value)
    except Exception:  # noqa: BLE001 - anything unencodable is shown as its text
        return str(value)
