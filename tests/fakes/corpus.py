"""The sample-message corpus (tests/corpus) as a list of manifest entries."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

CORPUS_DIR = Path(__file__).parent.parent / "corpus"

_MESSAGES_IN_FILE = re.compile(r"\b(\d+) messages in file\b")


@dataclass(frozen=True)
class CorpusEntry:
    """One MANIFEST.tsv row: ``file`` as written there, ``path`` the file to read, and what to answer."""

    file: str
    path: Path
    message_type: str
    version: str
    expect: str
    notes: str

    @property
    def messages_in_file(self) -> int | None:
        """The message count the notes state ('N messages in file'), or None."""
        match = _MESSAGES_IN_FILE.search(self.notes)
        return int(match.group(1)) if match else None


def corpus_entries() -> list[CorpusEntry]:
    """Every manifest entry, in manifest order."""
    return list(_read_manifest())


@cache
def _read_manifest() -> tuple[CorpusEntry, ...]:
    with open(CORPUS_DIR / "MANIFEST.tsv", newline="", encoding="utf-8") as manifest:
        return tuple(
            CorpusEntry(
                file=row["file"],
                path=CORPUS_DIR / row["file"],
                message_type=row["message_type"],
                version=row["version"],
                expect=row["expect"],
                notes=row["notes"],
            )
            for row in csv.DictReader(manifest, delimiter="\t")
        )
