"""The files a configuration reads besides channels.yaml (CSV tables, ``python:`` modules), by content hash.

A reload compares them as it compares the configuration text: a table file or a module whose
content changed rebuilds the channels that use it, and the config history keeps their hashes.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Literal

__all__ = ["InputFile", "sha256_of"]


@dataclass(frozen=True, slots=True)
class InputFile:
    """One file a configuration read, and the SHA-256 of the content that was applied."""

    kind: Literal["table", "module"]
    name: str  # the table's name, or the module's dotted name
    path: str
    sha256: str  # hex digest of the file's bytes

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"

    def as_record(self) -> dict[str, str]:
        """Plain data for the config history."""
        return asdict(self)


def sha256_of(data: bytes) -> str:
    """The hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()
