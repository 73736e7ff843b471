"""S3 object storage (boto3): keys that cannot escape their prefix, retried transfers, presigned URLs.

``E2E_*`` variables configure it (see ``Settings``); every S3 call in the project goes through ``Storage``.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

from .public_text import PublicText
from .schemas import PRESIGNED_URL_SECONDS
from .settings import Settings

log = logging.getLogger(__name__)

MULTIPART_THRESHOLD = 64 * 1024 * 1024
MULTIPART_CHUNK = 64 * 1024 * 1024


class StorageError(RuntimeError):
    """An S3 operation failed after its retries; the message (shown to clients: no endpoint address, no server
    folders) names the operation and the key."""


class StorageNotConfigured(StorageError):
    """S3 credentials are not set (E2E_ACCESS_KEY / E2E_SECRET_KEY)."""


class ObjectChanged(StorageError):
    """A conditional write found the object changed since it was read (S3's 412 Precondition Failed)."""


class UnsafeKey(ValueError):
    """A key segment that could escape its prefix or confuse S3 tools."""


def build_key(*segments: str) -> str:
    """Join key segments with '/', refusing absolute paths, '..', '.', empty segments and control characters.

    A segment may itself contain '/', each of its parts is checked the same way.
    """
    parts: list[str] = []
    for segment in segments:
        if segment is None:
            raise UnsafeKey("key segment is missing")
        if segment.startswith("/"):
            raise UnsafeKey(f"absolute path not allowed in an S3 key: {segment!r}")
        for part in str(segment).split("/"):
            if part in ("", ".", ".."):
                raise UnsafeKey(f"empty, '.' or '..' segment not allowed in an S3 key: {segment!r}")
            if any(ord(ch) < 32 or ord(ch) == 127 for ch in part) or "\\" in part:
                raise UnsafeKey(f"control character or backslash not allowed in an S3 key: {segment!r}")
            parts.append(part)
    if not parts:
        raise UnsafeKey("an S3 key needs at least one segment")
    return "/".join(parts)


def audio_key(
    job_id: str, *, filename: str, book_id: str | None = None, chapter_id: str | None = None
) -> str:
    """The original service's layout: audio/segments/{book_id}[/{chapter_id}]/{file} when book_id is set, else audio/{job_id}/{file}."""
    if book_id:
        return build_key("audio", "segments", book_id, *([chapter_id] if chapter_id else []), filename)
    return build_key("audio", job_id, filename)


def clone_key(reference_id: str, *, filename: str) -> str:
    """A voice clone's output: audio/clone/{reference_id}/{file}, one folder per reference voice, so clones of
    different references never share an object."""
    return build_key("audio", "clone", reference_id, filename)


def design_key(description_id: str, *, filename: str) -> str:
    """A voice design's output: audio/design/{description_id}/{file}, one folder per voice description, so designs
    of different descriptions never share an object."""
    return build_key("audio", "design", description_id, filename)


def checkpoint_prefix(job_id: str) -> str:
    return build_key("checkpoints", job_id)


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: float


class Storage:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.bucket = settings.s3_bucket
        self.endpoint = settings.s3_endpoint_url.rstrip("/")
        self.public = PublicText.of(settings)
        self._client = None

    @property
    def configured(self) -> bool:
        return self.settings.storage_configured

    @property
    def client(self):
        if not self.configured:
            raise StorageNotConfigured(
                "S3 storage is not configured: set E2E_ACCESS_KEY and E2E_SECRET_KEY (and E2E_ENDPOINT_URL, E2E_BUCKET)"
            )
        if self._client is None:
            self._client = boto3.session.Session().client(
                "s3",
                endpoint_url=self.endpoint,
                aws_access_key_id=self.settings.s3_access_key,
                aws_secret_access_key=self.settings.s3_secret_key,
                region_name=self.settings.s3_region,
                config=Config(
                    retries={"max_attempts": self.settings.s3_max_attempts, "mode": "standard"},
                    connect_timeout=self.settings.s3_connect_timeout,
                    read_timeout=60,
                    signature_version="s3v4",
                    s3={"addressing_style": "path"},
                    max_pool_connections=32,
                ),
            )
        return self._client

    def _transfer(self) -> TransferConfig:
        return TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_CHUNK)

    def _fail(self, action: str, key: str, exc: Exception) -> StorageError:
        return StorageError(self.public(f"S3 {action} of s3://{self.bucket}/{key} failed: {exc}"))

    # --- objects ---------------------------------------------------------------------------------------------

    def url(self, key: str) -> str:
        """The permanent (not signed) URL of an object."""
        return f"{self.endpoint}/{self.bucket}/{key}"

    def presigned_url(self, key: str, expires_in: int = PRESIGNED_URL_SECONDS) -> str:
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_in
        )

    def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist yet."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            try:
                self.client.create_bucket(Bucket=self.bucket)
            except (BotoCoreError, ClientError) as exc:
                raise StorageError(
                    self.public(f"bucket {self.bucket!r} is missing and cannot be created: {exc}")
                ) from exc
        except BotoCoreError as exc:
            raise StorageError(self.public(f"S3 is unreachable: {exc}")) from exc

    def head(self, key: str) -> ObjectInfo | None:
        try:
            meta = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise self._fail("head", key, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("head", key, exc) from exc
        return ObjectInfo(key, meta["ContentLength"], meta["LastModified"].timestamp())

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def upload_bytes(self, data: bytes, key: str, content_type: str = "audio/wav") -> None:
        self._upload(
            key,
            lambda: self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type),
        )

    def replace_if_unchanged(self, data: bytes, key: str, etag: str, content_type: str) -> None:
        """Overwrite ``key`` only if it still has ``etag`` (S3's conditional write, ``If-Match``); ObjectChanged
        when another writer came first or the object is gone. A store without conditional writes (501), or a
        botocore too old to send ``If-Match``, gets a plain overwrite."""
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentType=content_type, IfMatch=etag
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in {"PreconditionFailed", "412", "ConditionalRequestConflict", "409", "NoSuchKey", "404"}:
                raise ObjectChanged(f"s3://{self.bucket}/{key} changed since it was read") from exc
            if code not in {"NotImplemented", "501"}:
                raise self._fail("upload", key, exc) from exc
            self.upload_bytes(data, key, content_type=content_type)
        except ParamValidationError:
            self.upload_bytes(data, key, content_type=content_type)
        except BotoCoreError as exc:
            raise self._fail("upload", key, exc) from exc

    def upload_file(self, path: Path, key: str, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else None
        self._upload(
            key,
            lambda: self.client.upload_file(
                str(path), self.bucket, key, ExtraArgs=extra, Config=self._transfer()
            ),
        )

    def _upload(self, key: str, send: Callable[[], object]) -> None:
        """Run an upload; a bucket that does not exist yet (a fresh S3 server) is created and the upload repeated."""
        for first_try in (True, False):
            try:
                send()
                return
            except (BotoCoreError, ClientError, boto3.exceptions.S3UploadFailedError) as exc:
                if not (first_try and "NoSuchBucket" in str(exc)):
                    raise self._fail("upload", key, exc) from exc
            self.ensure_bucket()

    def download_file(self, key: str, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".part")
        try:
            self.client.download_file(self.bucket, key, str(partial), Config=self._transfer())
        except ClientError as exc:
            partial.unlink(missing_ok=True)
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                raise FileNotFoundError(f"s3://{self.bucket}/{key} does not exist") from exc
            raise self._fail("download", key, exc) from exc
        except BotoCoreError as exc:
            partial.unlink(missing_ok=True)
            raise self._fail("download", key, exc) from exc
        partial.replace(path)
        return path

    def read_bytes(self, key: str) -> bytes | None:
        """A small object's bytes; None when there is none under ``key``."""
        read = self.read_versioned(key)
        return None if read is None else read[0]

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """A small object's bytes and its ETag (for `replace_if_unchanged`); None when there is none."""
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=key)
            return answer["Body"].read(), answer["ETag"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise self._fail("download", key, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("download", key, exc) from exc

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            ):
                for obj in page.get("Contents", []):
                    yield ObjectInfo(obj["Key"], obj["Size"], obj["LastModified"].timestamp())
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("list", prefix, exc) from exc

    def delete_prefix(self, prefix: str) -> int:
        keys = [obj.key for obj in self.list(prefix)]
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in chunk]})
        return len(keys)

    # --- folders (checkpoints) -------------------------------------------------------------------------------

    def upload_dir(self, folder: Path, prefix: str, *, attempts: int = 3, backoff: float = 1.0) -> int:
        """Upload every file under ``folder`` to ``prefix`` and verify each object's size; returns bytes sent.

        The whole folder is retried ``attempts`` times (botocore already retries each request).
        """
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        last_error: Exception | None = None
        for attempt in range(1, attempts + 1):
            try:
                for path in files:
                    key = build_key(prefix, path.relative_to(folder).as_posix())
                    info = self.head(key)
                    if info is None or info.size != path.stat().st_size:
                        self.upload_file(path, key)
                self.verify_dir(folder, prefix)
                return sum(p.stat().st_size for p in files)
            except StorageError as exc:
                last_error = exc
                log.warning(
                    "upload of %s to %s failed (attempt %d/%d): %s", folder, prefix, attempt, attempts, exc
                )
                if attempt < attempts:
                    time.sleep(backoff * attempt)
        raise StorageError(
            self.public(
                f"could not upload {folder} to s3://{self.bucket}/{prefix} after {attempts} attempts: {last_error}"
            )
        ) from last_error

    def verify_dir(self, folder: Path, prefix: str) -> None:
        """Raise StorageError unless S3 holds every file of ``folder`` under ``prefix`` with the same size."""
        remote = {obj.key: obj.size for obj in self.list(prefix.rstrip("/") + "/")}
        for path in folder.rglob("*"):
            if path.is_file():
                key = build_key(prefix, path.relative_to(folder).as_posix())
                if remote.get(key) != path.stat().st_size:
                    raise StorageError(
                        self.public(f"s3://{self.bucket}/{key} is missing or its size differs from {path}")
                    )

    def holds_dir(self, folder: Path, prefix: str) -> bool:
        try:
            self.verify_dir(folder, prefix)
        except StorageError:
            return False
        return True

    def download_dir(self, prefix: str, folder: Path, *, replace_existing: bool = True) -> Path:
        """Download everything under ``prefix`` into ``folder`` (atomically: a partial download never appears).

        The files land in a fresh staging folder next to ``folder`` that is renamed into place at the end. An
        existing non-empty ``folder`` is replaced only with ``replace_existing``; otherwise it is left untouched
        and ``FileExistsError`` is raised (a restore never deletes a folder it did not create).
        """
        prefix = prefix.rstrip("/") + "/"
        objects = list(self.list(prefix))
        if not objects:
            raise FileNotFoundError(f"nothing stored under s3://{self.bucket}/{prefix}")
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.downloading-", dir=folder.parent))
        try:
            for obj in objects:
                relative = obj.key[len(prefix) :]
                build_key(relative)  # refuses '..' and friends from a hostile listing
                self.download_file(obj.key, staging / relative)
            _swap_into_place(staging, folder, replace_existing=replace_existing, shown=self.public.path)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return folder


def _swap_into_place(
    staging: Path, folder: Path, *, replace_existing: bool, shown: Callable[[Path], str]
) -> None:
    """Rename ``staging`` to ``folder``; an existing ``folder`` is first renamed aside (then removed) when
    ``replace_existing``, an empty one simply removed, a non-empty one otherwise kept (FileExistsError naming it
    as ``shown``)."""
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
    if folder.exists() or folder.is_symlink():
        if not replace_existing:
            raise FileExistsError(
                f"{shown(folder)} already exists and is not a complete model: not replacing it"
            )
        aside = folder.with_name(f".{folder.name}.replaced-{uuid.uuid4().hex[:8]}")
        folder.rename(aside)
        staging.rename(folder)
        shutil.rmtree(aside, ignore_errors=True)
        return
    staging.rename(folder)
