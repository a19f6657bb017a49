"""Names of fields and components for a message's version, read from hl7apy's structures.

``field_name("2.5", "PID", 5)`` is ``"Patient Name"``; ``component_name("2.5", "PID", 5, 1)`` is
``"Family Name"``. An unknown version falls back to the nearest one hl7apy knows (by major and
minor version, else its default); an unknown segment (Z segments) or position has no name (None).
Each segment's names are read once per version and kept.
"""

from __future__ import annotations

from functools import lru_cache

from hl7apy import SUPPORTED_LIBRARIES, load_reference
from hl7apy.exceptions import ChildNotFound

__all__ = ["component_name", "field_name", "library_version", "segment_fields"]

_FALLBACK = "2.5"


def library_version(version: str) -> str:
    """The hl7apy library version used for ``version`` ("2.5.1" -> "2.5.1", "2.3.2" -> "2.3")."""
    version = (version or "").strip()
    if version in SUPPORTED_LIBRARIES:
        return version
    major_minor = ".".join(version.split(".")[:2])
    return major_minor if major_minor in SUPPORTED_LIBRARIES else _FALLBACK


def _title(long_name: str) -> str:
    words = long_name.replace("_", " ").split()
    return " ".join(word.capitalize() if word.isupper() else word for word in words)


@lru_cache(maxsize=1024)
def segment_fields(version: str, segment: str) -> tuple[tuple[str, str, tuple[str, ...]], ...]:
    """Per field of ``segment`` in order: (data type, name, names of its components); () if unknown."""
    try:
        reference = load_reference(segment, "Segment", library_version(version))
    except (ChildNotFound, KeyError, ValueError):
        return ()
    fields = []
    for _child_name, child, _cardinality, _kind in reference[1]:
        data_type, long_name = child[2], child[3]
        components: tuple[str, ...] = ()
        if child[0] == "sequence":
            components = tuple(_title(component[1][3]) for component in child[1])
        fields.append((data_type, _title(long_name), components))
    return tuple(fields)


def field_name(version: str, segment: str, field: int) -> str | None:
    """The name of field ``field`` (1-based) of ``segment`` in ``version``, or None if unknown."""
    fields = segment_fields(version, segment)
    return fields[field - 1][1] if 0 < field <= len(fields) else None


def component_name(version: str, segment: str, field: int, component: int) -> str | None:
    """The name of component ``component`` (1-based) of a field, or None if unknown."""
    fields = segment_fields(version, segment)
    if not 0 < field <= len(fields):
        return None
    components = fields[field - 1][2]
    return components[component - 1] if 0 < component <= len(components) else None
