"""Transforms built from YAML-shaped specs and applied to messages, for the transform tests."""

from __future__ import annotations

import pytest

from engine.errors import TransformError
from engine.hl7.message import Message
from engine.transforms.lookup import LookupTable
from engine.transforms.spec import TransformSpec
from engine.transforms.transforms import build_transforms

PATH = "channels[0].transforms"
LOCATIONS = LookupTable(
    "locations", {"HUH AE OMU&9.8&ISO": "unused", "OMU B": "WARD-B", "": "NO-WARD", "A^B": "x"}
)


def build(*specs: dict, tables: dict | None = None) -> list:
    """Transforms built from YAML-shaped dicts, named channels[0].transforms[i]."""
    return build_transforms(
        [TransformSpec.model_validate(spec) for spec in specs], path=PATH, tables=tables or {}
    )


def run(message: Message, *specs: dict, tables: dict | None = None) -> Message:
    """The message after every transform, applied in order."""
    for transform in build(*specs, tables=tables):
        message = transform.apply(message)
    return message


def segment_text(message: Message, name: str, occurrence: int = 1) -> str:
    """The raw text of one segment."""
    return message.segment(name, occurrence).raw


def failure(message: Message, spec: dict, tables: dict | None = None) -> str:
    """The TransformError text one transform raises on this message."""
    (transform,) = build(spec, tables=tables)
    with pytest.raises(TransformError) as caught:
        transform.apply(message)
    return str(caught.value)
