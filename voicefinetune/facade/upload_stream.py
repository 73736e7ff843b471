"""A multipart ``/finetune`` body parsed as it arrives: the dataset file goes straight into the uploads folder
(no spooled second copy in /tmp) and the size cap is enforced while streaming; the partial file is always removed
when anything goes wrong."""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from fastapi import HTTPException, Request
from python_multipart.multipart import MultipartParser, parse_options_header

from ..diskfull import INSUFFICIENT_STORAGE, DiskFull, is_disk_full

if TYPE_CHECKING:  # python-multipart defines its callbacks' type for type checkers only
    from python_multipart.multipart import MultipartCallbacks

MAX_FIELDS_BYTES = 64 * 1024  # all non-file form fields together


@dataclass
class StreamedForm:
    fields: dict[str, str] = field(default_factory=dict)
    upload: Path | None = None
    filename: str | None = None


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    is_file: bool = False
    data: bytearray = field(default_factory=bytearray)


class _FormWriter:
    """The parser's callbacks: one part at a time, the file part written to disk as its bytes come."""

    def __init__(self, folder: Path, file_field: str, max_bytes: int):
        self.folder = folder
        self.file_field = file_field
        self.max_bytes = max_bytes
        self.form = StreamedForm()
        self.part = _Part()
        self.header_name = bytearray()
        self.header_value = bytearray()
        self.headers: dict[bytes, bytes] = {}
        self.handle: IO[bytes] | None = None
        self.total = 0
        self.field_bytes = 0
        self.error: HTTPException | None = None

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self.part_begin,
            "on_part_data": self.part_data,
            "on_part_end": self.part_end,
            "on_header_field": lambda data, start, end: self.header_name.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self.header_value.extend(data[start:end]),
            "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished,
        }

    def part_begin(self) -> None:
        self.part, self.headers = _Part(), {}

    def header_end(self) -> None:
        self.headers[bytes(self.header_name).lower()] = bytes(self.header_value)
        self.header_name.clear()
        self.header_value.clear()

    def headers_finished(self) -> None:
        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        self.part.name = options.get(b"name", b"").decode("utf-8", errors="replace")
        raw_filename = options.get(b"filename")
        self.part.filename = None if raw_filename is None else raw_filename.decode("utf-8", errors="replace")
        self.part.is_file = raw_filename is not None
        if self.part.name == self.file_field and self.part.is_file:
            if self.form.upload is not None:
                self._fail(400, f"send one file in the form field {self.file_field!r}, not several")
            self.folder.mkdir(parents=True, exist_ok=True)
            self.handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in part_end/close
                prefix=".incoming-", suffix=".zip", dir=self.folder, delete=False
            )
            self.form.upload, self.form.filename = Path(self.handle.name), self.part.filename

    def part_data(self, data: bytes, start: int, end: int) -> None:
        size = end - start
        self.total += size
        if self.total > self.max_bytes:
            self._fail(413, f"the upload exceeds the limit of {self.max_bytes} bytes (VFT_MAX_UPLOAD_BYTES)")
        if self.handle is not None:
            self.handle.write(data[start:end])
        elif not self.part.is_file:
            self.field_bytes += size
            if self.field_bytes > MAX_FIELDS_BYTES:
                self._fail(413, f"the form fields exceed {MAX_FIELDS_BYTES} bytes")
            self.part.data.extend(data[start:end])
        # other file parts are read and dropped (the original service ignores unknown fields)

    def part_end(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        elif not self.part.is_file:
            self.form.fields.setdefault(self.part.name, self.part.data.decode("utf-8", errors="replace"))
        if self.part.name == self.file_field and not self.part.is_file:
            self._fail(400, f"the form field {self.file_field!r} must be a file (the dataset zip)")

    def _fail(self, status: int, message: str) -> None:
        self.error = HTTPException(status, message)
        raise self.error

    def discard(self) -> None:
        if self.handle is not None:
            with contextlib.suppress(OSError):
                self.handle.close()
        if self.form.upload is not None:
            self.form.upload.unlink(missing_ok=True)


async def stream_form(request: Request, *, folder: Path, file_field: str, max_bytes: int) -> StreamedForm:
    """Parse a multipart body: form fields (strings) and at most one file in ``file_field``, saved in ``folder``."""
    _, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if not boundary:
        raise HTTPException(400, "the multipart body has no boundary in its Content-Type")
    writer = _FormWriter(folder, file_field, max_bytes)
    parser = MultipartParser(boundary, writer.callbacks())
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except HTTPException:
        writer.discard()
        raise
    except Exception as exc:
        writer.discard()
        if writer.error is not None:
            raise writer.error from exc
        if is_disk_full(exc):
            raise HTTPException(INSUFFICIENT_STORAGE, str(DiskFull("the uploaded dataset"))) from exc
        raise HTTPException(400, f"malformed multipart body: {type(exc).__name__}") from exc
    except BaseException:
        writer.discard()
        raise
    if writer.handle is not None:  # the body ended inside the file part
        writer.discard()
        raise HTTPException(400, "the multipart body ended before the dataset file did")
    return writer.form
