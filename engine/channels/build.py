"""Turn a channel's configuration into a running ``Channel``: its pipeline, destinations and queues."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from engine.channels.channel import Channel
from engine.channels.destinations.base import Destination
from engine.channels.destinations.fhir import FHIRDestination
from engine.channels.destinations.file import FileDestination
from engine.channels.destinations.handoff import ChannelHandoff
from engine.channels.destinations.http import HTTPDestination
from engine.channels.destinations.mllp import MLLPDestination
from engine.channels.destinations.record import RecordDestination
from engine.channels.destinations.spec import (
    FhirDestinationSettings,
    FileSettings,
    HttpDestinationSettings,
    MllpSettings,
)
from engine.channels.dispatcher import RetryPolicy
from engine.channels.journal import Journals
from engine.channels.leases import LOCAL_LEASES, Leases
from engine.channels.passes import IDLE_POLL_SECONDS
from engine.channels.pausing import Controls
from engine.channels.pipeline import DestinationStages, Pipeline
from engine.channels.queuespec import QueueSettings
from engine.channels.spec import ChannelDestinationConfig, RecordDestinationConfig
from engine.channels.wakeups import Wakeups
from engine.record.identity import IdentityRule
from engine.transforms.filters import build_filters
from engine.transforms.lookup import LookupTable
from engine.transforms.transforms import build_transforms

if TYPE_CHECKING:
    from engine.config import Config

__all__ = ["JOURNAL_FOLDER", "build_channel", "build_destination", "build_pipeline", "retry_policy"]

#: The folder under engine.data_dir that holds the destination queues' journals.
JOURNAL_FOLDER = "journal"


def retry_policy(queue: QueueSettings) -> RetryPolicy:
    """The RetryPolicy a destination's ``queue`` settings describe."""
    return RetryPolicy(
        initial_seconds=queue.retry_initial_seconds,
        max_seconds=queue.retry_max_seconds,
        multiplier=queue.retry_multiplier,
        jitter=queue.retry_jitter,
        max_attempts=queue.max_attempts,
        max_age_seconds=queue.max_age_seconds,
        on_error=queue.on_error,
    )


def build_destination(
    name: str,
    settings: MllpSettings | FileSettings | HttpDestinationSettings | FhirDestinationSettings,
    *,
    reactor,
) -> Destination:
    """The destination the settings' type describes (subclasses of the settings models included)."""
    if isinstance(settings, MllpSettings):
        return MLLPDestination(name, settings, reactor=reactor)
    if isinstance(settings, FileSettings):
        return FileDestination(name, settings, reactor=reactor)
    if isinstance(settings, HttpDestinationSettings):
        return HTTPDestination(name, settings, reactor=reactor)
    if isinstance(settings, FhirDestinationSettings):
        return FHIRDestination(name, settings, reactor=reactor)
    raise TypeError(f"no destination type takes {type(settings).__name__} settings")


def build_pipeline(config: Config, index: int, *, tables: Mapping[str, LookupTable]) -> Pipeline:
    """The filters and transforms of ``config.channels[index]`` and of each of its destinations.

    Stage names are their YAML paths (``channels[0].filters[1]``), which is how a filtered or
    failed message names the stage.
    """
    channel = config.channels[index]
    path = f"channels[{index}]"
    stages = [
        DestinationStages(
            spec.name,
            filters=build_filters(spec.filters, path=f"{path}.destinations[{j}].filters"),
            transforms=build_transforms(
                spec.transforms, path=f"{path}.destinations[{j}].transforms", tables=tables
            ),
        )
        for j, spec in enumerate(channel.destinations)
    ]
    return Pipeline(
        build_filters(channel.filters, path=f"{path}.filters"),
        build_transforms(channel.transforms, path=f"{path}.transforms", tables=tables),
        stages,
        default_charset=config.engine.default_charset,
    )


def build_channel(
    config: Config,
    index: int,
    *,
    store,
    reactor,
    channels: Mapping[str, Channel],
    tables: Mapping[str, LookupTable],
    observer=None,
    leases: Leases = LOCAL_LEASES,
    wakeups: Wakeups | None = None,
    delivery: bool = True,
    idle_poll_seconds: float = IDLE_POLL_SECONDS,
    controls: Controls | None = None,
) -> Channel:
    """The channel ``config.channels[index]``; stage names are their YAML paths.

    ``channels``: the running channels by name, which a ``channel`` destination hands messages to.
    ``leases``: the work this process holds (the channel's processing, each destination's queue).
    ``wakeups``: when other processes share the store (see ``Channel``). ``delivery``: whether this
    process delivers (its role); without, no destination is built, so none can connect.
    ``idle_poll_seconds``: how often the idle channel and its queues look for work others left.
    ``controls``: the pauses a ``PauseWatch`` applies to its dispatchers (see ``Dispatcher``).
    """
    channel = config.channels[index]
    charset = config.engine.default_charset
    destinations = []
    for spec in channel.destinations:
        if not delivery:
            destination = None
        elif isinstance(spec, ChannelDestinationConfig):
            destination = ChannelHandoff(
                spec.name,
                spec.channel,
                source_channel=channel.name,
                store=store,
                channels=channels,
                default_charset=charset,
            )
        elif isinstance(spec, RecordDestinationConfig):
            rule = (
                IdentityRule(fields=spec.identity_rule, strict=spec.identity_match == "strict")
                if spec.identity_rule
                else None
            )
            trust = (
                frozenset(spec.trust_cross_references) if spec.trust_cross_references is not None else None
            )
            destination = RecordDestination(
                spec.name,
                store=store,
                reactor=reactor,
                default_charset=charset,
                identity_rule=rule,
                trust_cross_references=trust,
            )
        else:
            destination = build_destination(spec.name, spec.settings, reactor=reactor)
        if destination is not None:
            destinations.append((destination, retry_policy(spec.queue)))
    pipeline = build_pipeline(config, index, tables=tables)
    settings = config.engine
    # Clustered, a queue may move to another node: its journal is kept in the store, for the next holder.
    journals = Journals(
        settings.data_dir / JOURNAL_FOLDER,
        sync=settings.store.durability == "power_loss",
        reactor=reactor,
        store_url=settings.store.url if settings.cluster is not None else None,
        lock_timeout=settings.store.lock_timeout_seconds,
        leases=leases,
    )
    return Channel(
        channel,
        pipeline=pipeline,
        destinations=destinations,
        store=store,
        journals=journals,
        reactor=reactor,
        observer=observer,
        leases=leases,
        wakeups=wakeups,
        idle_poll_seconds=idle_poll_seconds,
        controls=controls,
    )
