"""The part of a channels.yaml that commands on the store need: the engine block and the names in it.

``hl7engine messages``, ``resend``, ``nodes``... read the store and never run a channel, so they
neither build the listeners and channels nor import a ``python:`` transform module: this loader
validates only the ``engine`` block (the store, its keys, the data folder; not ``engine.http``)
and reads the channel and destination names as written. ``hl7engine channel list`` also validates
what it shows of each channel (``ChannelView``: name, enabled, source, and each destination's name,
type and queue) with the same types as the full loader, so a problem there reads as ``check``
says it; the rest of a channel, and the checks between parts of the file, are left to ``check``.
``hl7engine check`` and ``run`` use ``engine.config`` for all of it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from ruamel.yaml import YAMLError

from engine.channels.queuespec import QueueSettings
from engine.configengine import EngineSettings
from engine.configtypes import Frozen, Name
from engine.configyaml import ConfigProblem, format_path, read_config_text, read_document, validation_problems
from engine.configyaml import yaml_error as describe_yaml_error
from engine.errors import ConfigError

__all__ = ["DESTINATION_TYPES", "ChannelView", "StoreSide", "load_channel_views", "load_store_side"]


#: The destination types, as ``engine.channels.spec.AnyDestination`` tags them.
DESTINATION_TYPES = ("mllp", "file", "http", "fhir", "channel", "record")


class _EngineBlock(Frozen):
    engine: EngineSettings = Field(default_factory=dict, validate_default=True)


class _View(BaseModel):
    """Base of the views: immutable; the keys they do not show are left to the full loader."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class _DestinationView(_View):
    name: Name
    queue: QueueSettings = Field(default_factory=QueueSettings)


# One model a type, tagged by ``type`` as the full loader's are, so a wrong type reads the same.
_AnyDestinationView = Annotated[
    Union[  # noqa: UP007 - a union of models made at run time
        tuple(
            create_model(
                f"{kind.title()}DestinationView", __base__=_DestinationView, type=(Literal[kind], ...)
            )
            for kind in DESTINATION_TYPES
        )
    ],
    Field(discriminator="type"),
]


class ChannelView(_View):
    """What ``channel list`` shows of a channel, validated as the full loader does those keys."""

    name: Name
    enabled: bool = True
    source: str
    destinations: tuple[_AnyDestinationView, ...] = ()


class _ChannelsBlock(_View):
    channels: tuple[ChannelView, ...]


@dataclass(frozen=True)
class StoreSide:
    """The engine settings of a config, and its channels' names with their destinations' names."""

    engine: EngineSettings
    channels: Mapping[str, tuple[str, ...]]

    @property
    def store_url(self) -> str:
        """The SQLAlchemy URL of the message store."""
        return self.engine.store_url

    @property
    def destinations(self) -> tuple[str, ...]:
        """Every destination name of every channel, sorted, once each."""
        return tuple(sorted({name for names in self.channels.values() for name in names}))


def load_store_side(path: str | Path, *, environ: Mapping[str, str] | None = None) -> StoreSide:
    """Read a channels.yaml for its engine block and names; ConfigError lists the engine block's problems."""
    return _load(path, environ, views=False)[0]


def load_channel_views(
    path: str | Path, *, environ: Mapping[str, str] | None = None
) -> tuple[StoreSide, tuple[ChannelView, ...]]:
    """Read a channels.yaml for its engine block and its channels' views; ConfigError lists the problems."""
    return _load(path, environ, views=True)


def _load(path, environ, *, views: bool) -> tuple[StoreSide, tuple[ChannelView, ...]]:
    text, source_path = read_config_text(path)
    source, environ = str(path), os.environ if environ is None else environ
    try:
        document = read_document(text, environ)
    except YAMLError as error:
        line, message = describe_yaml_error(error)
        raise ConfigError([ConfigProblem("", line, message, source)]) from None
    data = document.data if isinstance(document.data, dict) else {}
    engine = data.get("engine")
    # engine.http is the web server's (its endpoint, users and limits): not needed here.
    block = {"engine": {k: v for k, v in engine.items() if k != "http"}} if isinstance(engine, dict) else {}
    if "engine" in data and not isinstance(engine, dict):
        block = {"engine": engine}
    problems = [
        (loc, message)
        for loc, message in document.problems
        if loc[:1] == ("engine",) or (views and _shown(loc))
    ]
    settings, channels = None, ()
    try:
        settings = _EngineBlock.model_validate(
            block,
            context={"base_dir": source_path.parent, "source_path": source_path, "environ": environ},
        ).engine
    except ValidationError as error:
        problems += validation_problems(block, error)
    if views:
        listed = {"channels": data["channels"]} if "channels" in data else {}
        try:
            channels = _ChannelsBlock.model_validate(listed).channels
        except ValidationError as error:
            problems += validation_problems(listed, error)
    if problems:
        raise ConfigError(
            [
                ConfigProblem(format_path(loc), document.line_of(loc), message, source)
                for loc, message in problems
            ]
        )
    return StoreSide(settings, _names(data.get("channels"))), channels


def _shown(loc) -> bool:
    """True for a place in the channels that a ChannelView reads."""
    if loc[:1] != ("channels",) or len(loc) < 3:
        return loc == ("channels",)
    if loc[2] != "destinations" or len(loc) < 5:
        return loc[2] in ChannelView.model_fields
    return loc[4] in ("name", "type", "queue")


def _names(channels) -> dict[str, tuple[str, ...]]:
    """Channel name -> its destinations' names, as written (the full loader checks them)."""
    found: dict[str, tuple[str, ...]] = {}
    for channel in channels if isinstance(channels, list) else ():
        if isinstance(channel, dict) and isinstance(channel.get("name"), str):
            destinations = channel.get("destinations")
            found[channel["name"]] = tuple(
                d["name"]
                for d in (destinations if isinstance(destinations, list) else ())
                if isinstance(d, dict) and isinstance(d.get("name"), str)
            )
    return found
