"""Where a chapter lives: everything in S3, so that any process (a restarted `vft serve`, another inference replica)
can answer for it and finish it.

``synthesis/{id}/plan.json`` (the request as segments), ``synthesis/{id}/state.json`` (status, progress, owner,
outputs), ``synthesis/{id}/segments/{n}.wav`` and then ``{n}.json`` (written last: a segment is done when its record
exists). The outputs go to ``audio/segments/{book_id}[/{chapter_id}]/{name}.*`` or ``audio/synthesis/{id}/{name}.*``.
Every call blocks (boto3): callers run them in threads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from voicefinetune.storage import ObjectChanged, Storage, build_key

WORK_PREFIX = "synthesis"


def work_prefix(synthesis_id: str) -> str:
    return build_key(WORK_PREFIX, synthesis_id) + "/"


def output_base(synthesis_id: str, book_id: str | None, chapter_id: str | None, name: str) -> str:
    """The outputs' key without extension."""
    if book_id:
        return build_key("audio", "segments", book_id, *([chapter_id] if chapter_id else []), name)
    return build_key("audio", "synthesis", synthesis_id, name)


def _segment(synthesis_id: str, index: int, extension: str) -> str:
    return f"{work_prefix(synthesis_id)}segments/{index:05d}.{extension}"


class ChapterStore:
    def __init__(self, storage: Storage):
        self.storage = storage

    def _put_json(self, key: str, value: Any) -> None:
        self.storage.upload_bytes(json.dumps(value).encode(), key, content_type="application/json")

    def _get_json(self, key: str) -> Any:
        data = self.storage.read_bytes(key)
        return None if data is None else json.loads(data)

    def save_plan(self, synthesis_id: str, plan: dict[str, Any]) -> None:
        self._put_json(work_prefix(synthesis_id) + "plan.json", plan)

    def plan(self, synthesis_id: str) -> dict[str, Any]:
        return self._get_json(work_prefix(synthesis_id) + "plan.json")

    def save_state(self, synthesis_id: str, state: dict[str, Any]) -> None:
        self._put_json(work_prefix(synthesis_id) + "state.json", state)

    def state(self, synthesis_id: str) -> dict[str, Any] | None:
        return self._get_json(work_prefix(synthesis_id) + "state.json")

    def versioned_state(self, synthesis_id: str) -> tuple[dict[str, Any], str] | None:
        """The state and its version (ETag), for `claim`."""
        read = self.storage.read_versioned(work_prefix(synthesis_id) + "state.json")
        return None if read is None else (json.loads(read[0]), read[1])

    def claim(self, synthesis_id: str, state: dict[str, Any], version: str) -> bool:
        """Save ``state`` (naming its new owner) only over ``version``: False when another process saved the
        chapter since, e.g. took it over first."""
        try:
            self.storage.replace_if_unchanged(
                json.dumps(state).encode(),
                work_prefix(synthesis_id) + "state.json",
                version,
                "application/json",
            )
        except ObjectChanged:
            return False
        return True

    def states(self) -> list[dict[str, Any]]:
        keys = [o.key for o in self.storage.list(WORK_PREFIX + "/") if o.key.endswith("/state.json")]
        return [state for key in keys if (state := self._get_json(key)) is not None]

    def put_segment(self, synthesis_id: str, index: int, wav: bytes, record: dict[str, Any]) -> None:
        self.storage.upload_bytes(wav, _segment(synthesis_id, index, "wav"))
        self._put_json(_segment(synthesis_id, index, "json"), record)

    def forget_segment(self, synthesis_id: str, index: int) -> None:
        """The segment is no longer done (its audio stays until it is written again)."""
        self.storage.delete_prefix(_segment(synthesis_id, index, "json"))

    def done_segments(self, synthesis_id: str) -> set[int]:
        keys = (o.key for o in self.storage.list(work_prefix(synthesis_id) + "segments/"))
        return {int(key.rsplit("/", 1)[1].split(".")[0]) for key in keys if key.endswith(".json")}

    def segment_record(self, synthesis_id: str, index: int) -> dict[str, Any]:
        return self._present(self._get_json(_segment(synthesis_id, index, "json")), synthesis_id, index)

    def segment_audio(self, synthesis_id: str, index: int) -> bytes:
        return self._present(
            self.storage.read_bytes(_segment(synthesis_id, index, "wav")), synthesis_id, index
        )

    @staticmethod
    def _present(value: Any, synthesis_id: str, index: int) -> Any:
        if value is None:
            raise FileNotFoundError(f"segment {index} of synthesis {synthesis_id} is missing from S3")
        return value

    def put_output(self, key: str, data: bytes | Path, content_type: str) -> None:
        """An output from memory, or from a file (the chapter's audio: a multipart upload when large)."""
        if isinstance(data, Path):
            self.storage.upload_file(data, key, content_type=content_type)
        else:
            self.storage.upload_bytes(data, key, content_type=content_type)

    def delete(self, synthesis_id: str, output_keys: list[str]) -> None:
        for key in output_keys:
            self.storage.delete_prefix(key)
        self.storage.delete_prefix(work_prefix(synthesis_id))
