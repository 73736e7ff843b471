"""The original service's job endpoints: `POST /finetune` (JSON or multipart upload), `GET /jobs`, `GET/DELETE /jobs/{id}`."""

from __future__ import annotations

from json import JSONDecodeError
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter, ValidationError

from ..lifecycle import TERMINAL_STATUSES
from ..schemas import FinetuneRequest, FinetuneResponse, InvalidInput, Job, check_job_id
from ..storage import StorageError, StorageNotConfigured, UnsafeKey
from ..validation_errors import invalid_json_message
from .backend import DatasetNotFound, JobBackend, JobConflict
from .metrics import JOBS_SUBMITTED
from .upload_stream import stream_form

JOB_LIST = TypeAdapter(list[Job])
JSON = "application/json"
UPLOAD_FIELD = "dataset"
MAX_UPLOAD_BYTES = 4 * 1024**3
FINETUNE_PATH = "/finetune"  # the one route that takes a multipart upload
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")

_FORM_SCHEMA = {
    "type": "object",
    "properties": {
        UPLOAD_FIELD: {
            "type": "string",
            "format": "binary",
            "description": "Dataset zip (train.jsonl + data/)",
        },
        **{
            name: {"type": "string", "description": field.description or ""}
            for name, field in FinetuneRequest.model_fields.items()
        },
    },
}
FINETUNE_OPENAPI = {
    "requestBody": {
        "required": True,
        "description": "JSON with dataset_s3_key, or multipart with the zip in the file field 'dataset' and the "
        "other fields as form fields (dataset_s3_key then optional).",
        "content": {
            "application/json": {
                "schema": FinetuneRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            },
            "multipart/form-data": {"schema": _FORM_SCHEMA},
        },
    }
}


def uploaded_key_label(filename: str | None) -> str:
    """What stands in ``dataset_s3_key`` for an uploaded zip (backends ignore it: the file is the dataset)."""
    return f"upload:{Path(filename or 'dataset.zip').name}"


NO_STORAGE_NO_UPLOAD = (
    "S3 storage is not configured (set E2E_ACCESS_KEY and E2E_SECRET_KEY), so a dataset_s3_key cannot be read: "
    f"upload the dataset zip as the multipart file field {UPLOAD_FIELD!r} instead"
)
KEY_OR_UPLOAD = f"required: the S3 key of the dataset zip, or send the zip itself as the multipart file field {UPLOAD_FIELD!r}"


def path_job_id(job_id: str) -> str:
    """A job id taken from a URL path; 400 naming job_id when no job could have it."""
    try:
        return check_job_id(job_id)
    except InvalidInput as exc:
        raise HTTPException(400, str(exc)) from exc


def split_unknown_fields(data: Any) -> tuple[Any, list[str]]:
    """The body without fields FinetuneRequest does not know, and their names: like the original service, unknown
    fields are ignored rather than refused (a client may send e.g. ``flash_attn``), and the 202 says so."""
    if not isinstance(data, dict):
        return data, []
    unknown = sorted(str(name) for name in data if name not in FinetuneRequest.model_fields)
    return {name: value for name, value in data.items() if name in FinetuneRequest.model_fields}, unknown


def _is_missing_key(error: Any) -> bool:
    return error["type"] == "missing" and tuple(error["loc"]) == ("dataset_s3_key",)


def _validate(data: Any, storage_configured: bool) -> FinetuneRequest:
    """Validate the fields; without an upload and without S3 a missing dataset_s3_key is the 503 (nothing the
    client could send without a file would work), other field errors still come first as a 422."""
    try:
        return FinetuneRequest.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if not storage_configured and all(_is_missing_key(error) for error in errors):
            raise HTTPException(503, NO_STORAGE_NO_UPLOAD) from exc
        errors = [{**error, "msg": KEY_OR_UPLOAD} if _is_missing_key(error) else error for error in errors]
        raise RequestValidationError([{**error, "loc": ("body", *error["loc"])} for error in errors]) from exc


async def read_finetune_request(
    request: Request,
    upload_dir: Path,
    storage_configured: bool = True,
    *,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
) -> tuple[FinetuneRequest, Path | None, list[str]]:
    """The request from a JSON body or from form fields (strings, coerced by the same model) plus a saved upload."""
    content_type = request.headers.get("content-type", "").lower()
    if not content_type.startswith(FORM_TYPES):
        try:
            body = await request.json()
        except ValueError as exc:
            reason = (
                invalid_json_message(exc.msg, exc.doc, exc.pos)
                if isinstance(exc, JSONDecodeError)
                else "request body is not valid JSON"
            )
            raise HTTPException(
                400,
                f"{reason}; send JSON (Content-Type: application/json) or a multipart form with a 'dataset' file",
            ) from exc
        body, ignored = split_unknown_fields(body)
        return _validate(body, storage_configured), None, ignored
    if content_type.startswith("multipart/"):
        return await _read_streamed_form(request, upload_dir, storage_configured, max_upload_bytes)
    form = await request.form()  # url-encoded: fields only, no file
    if UPLOAD_FIELD in form:
        raise HTTPException(400, f"the form field {UPLOAD_FIELD!r} must be a file (the dataset zip)")
    fields = {
        key: value for key, value in form.multi_items() if isinstance(value, str) and value.strip() != ""
    }
    fields, ignored = split_unknown_fields(fields)
    return _validate(fields, storage_configured), None, ignored


async def _read_streamed_form(
    request: Request, upload_dir: Path, storage_configured: bool, max_upload_bytes: int
) -> tuple[FinetuneRequest, Path | None, list[str]]:
    form = await stream_form(request, folder=upload_dir, file_field=UPLOAD_FIELD, max_bytes=max_upload_bytes)
    try:
        fields = {
            key: value for key, value in form.fields.items() if key != UPLOAD_FIELD and value.strip() != ""
        }
        if form.upload is not None:
            if form.upload.stat().st_size == 0:
                raise HTTPException(400, "the uploaded 'dataset' file is empty: send the dataset zip")
            fields.setdefault("dataset_s3_key", uploaded_key_label(form.filename))
        fields, ignored = split_unknown_fields(fields)
        return _validate(fields, storage_configured or form.upload is not None), form.upload, ignored
    except BaseException:
        if form.upload is not None:
            form.upload.unlink(missing_ok=True)
        raise


def build_job_router(
    backend: JobBackend,
    upload_dir: Path,
    storage_configured: bool = True,
    *,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
) -> APIRouter:
    router = APIRouter(tags=["fine-tuning"])

    @router.post(
        FINETUNE_PATH,
        status_code=202,
        response_model=FinetuneResponse,
        openapi_extra=FINETUNE_OPENAPI,
        summary="Start a fine-tuning job (JSON with dataset_s3_key, or multipart upload of the zip)",
    )
    async def finetune(request: Request) -> Response:
        parsed, upload, ignored = await read_finetune_request(
            request, upload_dir, storage_configured, max_upload_bytes=max_upload_bytes
        )
        try:
            job = await backend.create(parsed, upload)
        except InvalidInput as exc:
            raise HTTPException(400, str(exc)) from exc
        except (DatasetNotFound, UnsafeKey) as exc:
            raise HTTPException(400, str(exc)) from exc
        except JobConflict as exc:
            raise HTTPException(409, str(exc)) from exc
        except StorageNotConfigured as exc:
            raise HTTPException(503, str(exc)) from exc
        except StorageError as exc:
            raise HTTPException(503, f"S3 storage is unavailable: {exc}") from exc
        finally:
            if upload is not None and upload.exists():  # the backend moves it when it keeps it
                upload.unlink(missing_ok=True)
        JOBS_SUBMITTED.labels(source="upload" if upload is not None else "s3").inc()
        # A created job has its speaker name and config (validated here, as the fields would be).
        answer = FinetuneResponse.model_validate(job, from_attributes=True)
        body = answer.model_dump(mode="json")
        if ignored:
            body["warnings"] = [f"ignored unknown field(s): {', '.join(ignored)}"]
        return JSONResponse(body, status_code=202)

    # The records are already validated models: serialize them directly (pydantic-core) instead of letting
    # FastAPI validate them again through response_model, which costs ~10x for GET /jobs with many jobs.
    @router.get("/jobs", response_model=list[Job], response_model_exclude_none=True, summary="List all jobs")
    async def list_jobs() -> Response:
        return Response(JOB_LIST.dump_json(await backend.list(), exclude_none=True), media_type=JSON)

    @router.get("/jobs/{job_id}", response_model=Job, response_model_exclude_none=True, summary="Job status")
    async def get_job(job_id: str) -> Response:
        job = await backend.get(path_job_id(job_id))
        if job is None:
            raise HTTPException(404, f"job {job_id!r} not found")
        return Response(job.model_dump_json(exclude_none=True), media_type=JSON)

    @router.delete("/jobs/{job_id}", summary="Cancel a running job or delete a finished one (with its files)")
    async def delete_job(job_id: str) -> dict[str, Any]:
        job = await backend.get(path_job_id(job_id))
        if job is None or not await backend.delete(job_id):
            raise HTTPException(404, f"job {job_id!r} not found")
        finished = job.status in TERMINAL_STATUSES
        return {
            "job_id": job_id,
            "status": "deleted" if finished else "cancelled",
            "previous_status": job.status,
        }

    return router


def remove_stale_uploads(upload_dir: Path) -> None:
    """Uploads interrupted by a crash leave `.incoming-*` files; nothing refers to them."""
    for path in upload_dir.glob(".incoming-*"):
        path.unlink(missing_ok=True)
