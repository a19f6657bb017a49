"""Which segments a message structure may hold, read from hl7apy's structures for a version.

``segments_of("2.5.1", "ORU^R01")`` is every segment an ORU_R01 may hold (groups flattened). A type
pattern as channels accept them (``ADT``, ``SIU^S1?``) stands for every structure it may name; a
pattern with a wildcard in the message code, or one hl7apy does not know, gives None (anything goes).
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import import_module

from hl7apy import load_reference
from hl7apy.exceptions import ChildNotFound

from engine.hl7.header import structure_for
from engine.hl7.names import library_version

__all__ = ["segments_of"]


@lru_cache(maxsize=64)
def _messages(version: str) -> tuple[str, ...]:
    library = import_module(f"hl7apy.v{library_version(version).replace('.', '_')}.messages")
    return tuple(library.MESSAGES)


@lru_cache(maxsize=256)
def _structure_segments(version: str, structure: str) -> frozenset[str]:
    try:
        reference = load_reference(structure, "Message", library_version(version))
    except (ChildNotFound, KeyError, ValueError):
        return frozenset()
    found: set[str] = set()

    def walk(node) -> None:
        for name, child, _cardinality, kind in node[1]:
            if kind == "SEG":
                found.add(name)
            elif kind == "GRP":
                walk(child)

    walk(reference)
    return frozenset(found)


@lru_cache(maxsize=256)
def segments_of(version: str, pattern: str) -> frozenset[str] | None:
    """Every segment the structures a type pattern names may hold; None when it cannot be known."""
    code, _, trigger = pattern.partition("^")
    if not code or "*" in code or "?" in code:
        return None
    if trigger and not re.search(r"[*?]", trigger):
        structures = [structure_for(code, trigger, version)]
    else:
        wild = re.escape(trigger or "*").replace(r"\*", "[A-Z0-9]*").replace(r"\?", "[A-Z0-9]")
        structures = [name for name in _messages(version) if re.fullmatch(f"{code}_{wild}", name)]
    segments = frozenset().union(*(_structure_segments(version, name) for name in structures))
    return segments or None
