"""Failure messages as a client sees them (job errors, error bodies): server paths shown relative to the data
folder (other files of the server by their name only) and the S3 endpoint's address left out (objects are named
``s3://bucket/key``). The server's log keeps the full text: exceptions keep their cause."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .settings import Settings

S3_ENDPOINT = "the S3 endpoint"
DATA_FOLDER = "the data folder"
# An absolute path in running text: a '/' that does not continue a word, a URL or a relative path, nor opens a
# quoted value (a client's own input, e.g. a zip member's name), up to the next space, quote, bracket or separator
# (a final '.' ends the sentence, not the path).
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~\-\\'])/[^\s'\"(),;:<>|\[\]{}]*[^\s'\"(),;:<>|\[\]{}./]")
_PATH_END = r"(?=[^\w.\-]|$)"


@dataclass(frozen=True)
class PublicText:
    data_dir: Path
    endpoint: str

    @classmethod
    def of(cls, settings: Settings) -> PublicText:
        return cls(settings.data_dir, settings.s3_endpoint_url)

    def __call__(self, text: str) -> str:
        """``text`` fit to show a client."""
        return self._paths(self._endpoint(text))

    def path(self, path: Path | str) -> str:
        """A server path as shown: relative to the data folder when inside it, else its last part."""
        path = Path(path)
        for root in self._roots():
            if path.absolute() == root:
                return DATA_FOLDER
            if path.absolute().is_relative_to(root):
                return path.absolute().relative_to(root).as_posix()
        return path.name if path.is_absolute() else path.as_posix()

    def _roots(self) -> list[Path]:
        return list(dict.fromkeys((self.data_dir.absolute(), self.data_dir.resolve())))

    def _endpoint(self, text: str) -> str:
        endpoint = self.endpoint.strip().rstrip("/")
        if not endpoint:
            return text
        # Path-style addressing: {endpoint}/{bucket}/{key} is the object s3://{bucket}/{key}.
        text = re.sub(re.escape(endpoint) + r"/([^\s'\"]*)", r"s3://\1", text, flags=re.IGNORECASE)
        text = re.sub(re.escape(endpoint), S3_ENDPOINT, text, flags=re.IGNORECASE)
        address = urlsplit(endpoint).netloc
        return (
            re.sub(re.escape(address) + _PATH_END, S3_ENDPOINT, text, flags=re.IGNORECASE)
            if address
            else text
        )

    def _paths(self, text: str) -> str:
        for root in sorted(self._roots(), key=lambda root: -len(str(root))):
            text = re.sub(re.escape(str(root)) + r"/", "", text)
            text = re.sub(re.escape(str(root)) + _PATH_END, DATA_FOLDER, text)
        return _ABSOLUTE_PATH.sub(self._outside_path, text)

    @staticmethod
    def _outside_path(match: re.Match[str]) -> str:
        """A file or folder of the server outside the data folder (a model folder, a source file in a traceback)
        by its name; text that only looks like a path (an API route such as ``/v1/models``) names nothing here and
        stays."""
        candidate = match.group(0)
        return Path(candidate).name if Path(candidate).exists() else candidate
