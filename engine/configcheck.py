"""Likely mistakes in a valid configuration: warnings ``hl7engine check`` prints, each at its YAML path.

A warning never stops the engine (the config is valid); it names something that probably does not
do what its author meant:

- a field path the message structure does not have: a segment none of the structures the channel
  accepts may hold (hl7apy's structures for ``engine.default_version``), or a field number past the
  segment's end; Z segments and segments the channel's own transforms add are not judged;
- a lookup table no ``map`` uses (a table whose file cannot be read is already an error);
- a channel no listener feeds: an earlier enabled channel of its listener takes every message it
  accepts (and no ``channel`` destination hands it any);
- a destination that connects to one of our own listeners' ports on this machine (a loop).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from pydantic import BaseModel

from engine.channels.spec import AcceptRule, ChannelConfig
from engine.config import Config, ListenerConfig
from engine.configyaml import Loc, format_path
from engine.hl7.message import parse_path
from engine.hl7.names import segment_fields
from engine.hl7.structure import segments_of
from engine.listeners.endpoints import ALL_INTERFACES, bind_of
from engine.transforms.spec import CopySpec

__all__ = ["ConfigWarning", "config_warnings"]


@dataclass(frozen=True)
class ConfigWarning:
    """One likely mistake, at its YAML path."""

    path: str
    text: str

    def __str__(self) -> str:
        return f"warning: {self.path}: {self.text}"


def config_warnings(config: Config) -> list[ConfigWarning]:
    """Every warning about ``config``, in file order within each kind."""
    found: list[tuple[Loc, str]] = []
    for i, channel in enumerate(config.channels):
        found += _field_path_warnings(config, ("channels", i), channel)
    found += _unused_tables(config)
    found += _unfed_channels(config)
    found += _loops(config)
    return [ConfigWarning(format_path(loc), text) for loc, text in found]


# -- field paths ---------------------------------------------------------------------------------


def _field_paths(value, loc: Loc) -> Iterator[tuple[Loc, str]]:
    """(YAML loc, path) of each field path under a filter or transform spec, as written."""
    if isinstance(value, BaseModel):
        keys = ("field", "from_", "to") if isinstance(value, CopySpec) else ("field",)
        for name, info in type(value).model_fields.items():
            item = getattr(value, name)
            if item is None:
                continue
            key = info.alias or name
            if name in keys and isinstance(item, str):
                yield loc + (key,), item
            else:
                yield from _field_paths(item, loc + (key,))
    elif isinstance(value, tuple):
        for index, item in enumerate(value):
            yield from _field_paths(item, loc + (index,))


def _added_segments(channel: ChannelConfig) -> set[str]:
    """Segments the channel's transforms (or its destinations') create: add_segment, rename_segment."""
    specs = [*channel.transforms, *(t for d in channel.destinations for t in d.transforms)]
    added = {spec.add_segment.segment[:3] for spec in specs if spec.add_segment is not None}
    return added | {spec.rename_segment.to for spec in specs if spec.rename_segment is not None}


def _field_path_warnings(config: Config, loc: Loc, channel: ChannelConfig) -> list[tuple[Loc, str]]:
    version = config.engine.default_version
    allowed: set[str] | None = set()
    for pattern in channel.accept.types:
        segments = segments_of(version, pattern)
        if segments is None:
            allowed = None
            break
        allowed |= segments
    added = _added_segments(channel)
    stages = [(("filters",), channel.filters), (("transforms",), channel.transforms)]
    for j, destination in enumerate(channel.destinations):
        stages.append((("destinations", j, "filters"), destination.filters))
        stages.append((("destinations", j, "transforms"), destination.transforms))
    warnings = []
    for place, specs in stages:
        for path_loc, text in _field_paths(specs, loc + place):
            where = parse_path(text)
            segment = where.segment
            if segment.startswith("Z") or segment in added:
                continue
            if allowed is not None and segment not in allowed:
                accepted = ", ".join(channel.accept.types)
                warnings.append(
                    (path_loc, f"{text}: {accepted} messages (HL7 {version}) have no {segment} segment")
                )
                continue
            fields = segment_fields(version, segment)
            if fields and where.field > len(fields):
                warnings.append(
                    (path_loc, f"{text}: {segment} has {len(fields)} fields in HL7 {version}; past its end")
                )
    return warnings


# -- tables --------------------------------------------------------------------------------------


def _unused_tables(config: Config) -> list[tuple[Loc, str]]:
    used = {
        spec.map_.table
        for channel in config.channels
        for spec in (*channel.transforms, *(t for d in channel.destinations for t in d.transforms))
        if spec.map_ is not None
    }
    unused = [name for name in config.tables if name not in used]
    return [(("tables", name), "no map transform uses this table") for name in unused]


# -- channels no listener feeds ------------------------------------------------------------------


def _covers(earlier: ChannelConfig, later: ChannelConfig) -> bool:
    """True when every message ``later`` accepts is accepted by ``earlier`` too (so it never gets one)."""
    senders = earlier.accept.senders
    senders_covered = not senders or (
        bool(later.accept.senders)
        and all(
            any(
                (e.application is None or e.application == s.application)
                and (e.facility is None or e.facility == s.facility)
                for e in senders
            )
            for s in later.accept.senders
        )
    )
    # The later channel's patterns read as message types: the earlier one's wildcards match them.
    any_sender = AcceptRule(types=earlier.accept.types)
    return senders_covered and all(any_sender.matches(pattern, "", "") for pattern in later.accept.types)


def _unfed_channels(config: Config) -> list[tuple[Loc, str]]:
    handed = {d.channel for c in config.channels for d in c.destinations if d.type == "channel"}
    warnings = []
    for i, channel in enumerate(config.channels):
        if not channel.enabled or channel.name in handed:
            continue
        earlier = next(
            (
                other
                for other in config.channels[:i]
                if other.enabled and other.source == channel.source and _covers(other, channel)
            ),
            None,
        )
        if earlier is not None:
            warnings.append(
                (
                    ("channels", i, "accept"),
                    f"listener {channel.source!r} gives every message this channel accepts to"
                    f" {earlier.name!r}, an earlier channel: this one never gets any",
                )
            )
    return warnings


# -- destinations that loop back -----------------------------------------------------------------


def _is_local(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain", *ALL_INTERFACES):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _listener_ports(config: Config) -> dict[int, str]:
    ports = {}
    for listener in config.listeners:
        if isinstance(listener, ListenerConfig):
            bind = bind_of(listener.endpoint)
            if bind.port:
                ports.setdefault(bind.port, listener.name)
    return ports


def _loops(config: Config) -> list[tuple[Loc, str]]:
    ports = _listener_ports(config)
    warnings = []
    for i, channel in enumerate(config.channels):
        for j, destination in enumerate(channel.destinations):
            if destination.type == "mllp":
                host, port, key = destination.host, destination.port, "port"
            elif destination.type == "http":
                parts = urlsplit(destination.url)
                host, port, key = parts.hostname or "", parts.port, "url"
            else:
                continue
            if port in ports and _is_local(host):
                warnings.append(
                    (
                        ("channels", i, "destinations", j, key),
                        f"{host}:{port} is listener {ports[port]!r} of this engine:"
                        " the messages come back in",
                    )
                )
    return warnings
