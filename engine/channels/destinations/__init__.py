"""Where a channel sends messages: MLLP, file and HTTP destinations, and the factory that picks one.

Each type has its settings model in ``spec`` (the YAML shape) and a class implementing
``engine.channels.stages.Destination``; ``policy.decide`` maps a downstream ACK to an outcome.
"""

from __future__ import annotations

from engine.channels.destinations.file import FileDestination
from engine.channels.destinations.http import HTTPDestination
from engine.channels.destinations.mllp import MLLPDestination
from engine.channels.destinations.spec import AckPolicy, FileSettings, HttpDestinationSettings, MllpSettings
from engine.channels.stages import Destination

__all__ = [
    "AckPolicy",
    "FileDestination",
    "FileSettings",
    "HTTPDestination",
    "HttpDestinationSettings",
    "MLLPDestination",
    "MllpSettings",
    "build_destination",
]


def build_destination(
    name: str, settings: MllpSettings | FileSettings | HttpDestinationSettings, *, reactor
) -> Destination:
    """The destination the settings' type describes (subclasses of the settings models included)."""
    if isinstance(settings, MllpSettings):
        return MLLPDestination(name, settings, reactor=reactor)
    if isinstance(settings, FileSettings):
        return FileDestination(name, settings, reactor=reactor)
    if isinstance(settings, HttpDestinationSettings):
        return HTTPDestination(name, settings, reactor=reactor)
    raise TypeError(f"no destination type takes {type(settings).__name__} settings")
