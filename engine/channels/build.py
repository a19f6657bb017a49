"""Turn a channel's configuration into its runner: filters, transforms, destinations and queues."""

from __future__ import annotations

from collections.abc import Mapping

from engine.channels.destinations import build_destination
from engine.channels.handoff import ChannelHandoff
from engine.channels.runner import ChannelRunner, DestinationStages, RetryPolicy
from engine.config import ChannelConfig, Config
from engine.record.destination import RecordDestination
from engine.record.identity import IdentityRule
from engine.transforms.filters import build_filters
from engine.transforms.lookup import LookupTable
from engine.transforms.transforms import build_transforms


def retry_policy(queue) -> RetryPolicy:
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


def build_runner(
    config: Config,
    index: int,
    *,
    store,
    reactor,
    runners: Mapping[str, ChannelRunner],
    tables: Mapping[str, LookupTable],
    observer=None,
) -> ChannelRunner:
    """The runner of ``config.channels[index]``; stage names are their YAML paths."""
    channel: ChannelConfig = config.channels[index]
    path = f"channels[{index}]"
    destinations = []
    for j, spec in enumerate(channel.destinations):
        dpath = f"{path}.destinations[{j}]"
        if spec.type == "channel":
            connector = ChannelHandoff(
                spec.name,
                spec.channel,
                source_channel=channel.name,
                store=store,
                runners=runners,
                default_charset=config.engine.default_charset,
            )
        elif spec.type == "record":
            rule = IdentityRule(fields=spec.identity_rule) if spec.identity_rule else None
            connector = RecordDestination(
                spec.name,
                store=store,
                reactor=reactor,
                default_charset=config.engine.default_charset,
                identity_rule=rule,
            )
        else:
            connector = build_destination(spec.name, spec.settings, reactor=reactor)
        destinations.append(
            DestinationStages(
                name=spec.name,
                filters=build_filters(spec.filters, path=f"{dpath}.filters"),
                transforms=build_transforms(spec.transforms, path=f"{dpath}.transforms", tables=tables),
                destination=connector,
                retry=retry_policy(spec.queue),
                # A file destination batches when asked; the record always applies a run in one writer call.
                batch=bool(getattr(spec.settings, "batch", False))
                if spec.type == "file"
                else spec.type == "record",
            )
        )
    return ChannelRunner(
        channel.name,
        store=store,
        reactor=reactor,
        filters=build_filters(channel.filters, path=f"{path}.filters"),
        transforms=build_transforms(channel.transforms, path=f"{path}.transforms", tables=tables),
        destinations=destinations,
        default_charset=config.engine.default_charset,
        observer=observer,
    )
