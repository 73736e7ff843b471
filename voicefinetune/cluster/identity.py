"""A VoiceFinetune's identity outside Kubernetes: the id its checkpoint prefix, its voice registration and its
routing key are made from.

A resource in the home namespace (where the operator and the facade run), or of an operator that serves one
namespace only, keeps its bare name, so the REST facade's job ids (the resource names) stay what they were. A
resource in any other namespace gets ``{namespace}--{name}`` plus a short hash of ``namespace/name``: ``team-a/hero`` and ``team-b/hero`` no longer share a checkpoint or a
voice, and the hash keeps a home resource literally named ``team-a--hero`` apart from ``team-a/hero``. Every id
is a valid REST job id (at most 63 lowercase letters, digits and dashes).
"""

from __future__ import annotations

import hashlib

MAX_ID = 63
SEPARATOR = "--"
HASH_LENGTH = 8


def voice_id(namespace: str, name: str, *, home: str, qualify: bool = True) -> str:
    """The job id of ``namespace/name`` as seen from the ``home`` namespace (``qualify`` False: one namespace is
    served, names cannot collide)."""
    if namespace == home or not qualify:
        return name
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:HASH_LENGTH]
    head = f"{namespace}{SEPARATOR}{name}".replace(".", "-")
    head = head[: MAX_ID - HASH_LENGTH - 1].rstrip("-")
    return f"{head}-{digest}"
