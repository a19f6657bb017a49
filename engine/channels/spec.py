"""The channel configuration models: which messages a channel takes, its stages, its destinations and queues.

``engine.config`` composes these into the whole configuration; a problem here is reported like any
other, at its YAML path with its line. Each destination type's own keys come from its settings
model in ``engine.channels.destinations.spec``.
"""

from __future__ import annotations

import re
from functools import cached_property
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from engine.channels.destinations.spec import (
    FhirDestinationSettings,
    FileSettings,
    HttpDestinationSettings,
    MllpSettings,
)
from engine.channels.queuespec import QueueSettings
from engine.configtypes import Frozen, HL7Text, Name, Seconds, check_not_empty
from engine.transforms.spec import FilterSpec, TransformSpec

__all__ = [
    "AcceptRule",
    "AnyDestination",
    "ChannelConfig",
    "ChannelDestinationConfig",
    "FileDestinationConfig",
    "HttpDestinationConfig",
    "MllpDestinationConfig",
    "RecordDestinationConfig",
    "SenderMatch",
]


def _check_type_pattern(value: str) -> str:
    if not re.fullmatch(r"[A-Z0-9*?]{1,3}(\^[A-Z0-9*?]{1,3})?", value):
        raise ValueError(
            "must be a message type pattern: CODE or CODE^TRIGGER made of A-Z, 0-9, * and ?,"
            f" e.g. ADT, ADT^A0*, ORU^R01, * (got {value!r})"
        )
    return value


class SenderMatch(Frozen):
    """One accepted sender: MSH-3.1 and/or MSH-4.1; an omitted one matches anything."""

    application: HL7Text | None = None
    facility: HL7Text | None = None

    @model_validator(mode="after")
    def _names_something(self) -> SenderMatch:
        if self.application is None and self.facility is None:
            raise ValueError("give application, facility or both (leave senders empty to accept any sender)")
        return self

    def matches(self, sending_application: str, sending_facility: str) -> bool:
        """True when the sender's namespace ids match the ones given here."""
        return (self.application is None or self.application == sending_application) and (
            self.facility is None or self.facility == sending_facility
        )


def _pattern_regex(pattern: str) -> str:
    # A component wildcard never crosses '^'; a trailing (?:\^.*)? lets "ADT" match any trigger
    # and ignores the message structure component (ADT^A01^ADT_A01).
    wildcards = {"*": "[^^]*", "?": "[^^]"}
    return "".join(wildcards.get(char, re.escape(char)) for char in pattern) + r"(?:\^.*)?"


class AcceptRule(Frozen):
    """Which messages a channel takes: MSH-9 patterns and, optionally, senders."""

    types: Annotated[
        tuple[Annotated[str, AfterValidator(_check_type_pattern)], ...], AfterValidator(check_not_empty)
    ]
    senders: tuple[SenderMatch, ...] = ()

    @cached_property
    def _types_regex(self) -> re.Pattern[str]:
        return re.compile("|".join(f"(?:{_pattern_regex(pattern)})" for pattern in self.types))

    def matches(self, message_type: str, sending_application: str, sending_facility: str) -> bool:
        """True when the message type matches a pattern and the sender is listed (or none are)."""
        if self._types_regex.fullmatch(message_type) is None:
            return False
        return not self.senders or any(s.matches(sending_application, sending_facility) for s in self.senders)


class _DestinationCommon(Frozen):
    name: Name
    filters: tuple[FilterSpec, ...] = ()
    transforms: tuple[TransformSpec, ...] = ()
    queue: QueueSettings = Field(default_factory=QueueSettings)

    @property
    def settings(self):
        """The connector settings (the destination's own keys)."""
        return self


class MllpDestinationConfig(_DestinationCommon, MllpSettings):
    """Send over MLLP to host:port and check the ACK."""

    type: Literal["mllp"]


class FileDestinationConfig(_DestinationCommon, FileSettings):
    """Write each message (or a batch) to a file, atomically."""

    type: Literal["file"]


class HttpDestinationConfig(_DestinationCommon, HttpDestinationSettings):
    """POST each message as HL7 over HTTP."""

    type: Literal["http"]


class FhirDestinationConfig(_DestinationCommon, FhirDestinationSettings):
    """POST each message as a FHIR R4 transaction Bundle to a FHIR server."""

    type: Literal["fhir"]


class ChannelDestinationConfig(_DestinationCommon):
    """Hand each message to another channel."""

    type: Literal["channel"]
    channel: Name


class RecordDestinationConfig(_DestinationCommon):
    """Apply each message to the unified patient record (ADT, SIU, ORU, DFT)."""

    type: Literal["record"]
    identity_rule: tuple[Literal["family", "given", "birth_date", "sex"], ...] | None = (
        "family",
        "given",
        "birth_date",
        "sex",
    )
    # strict: the rule links only with a corroborating phone or address, else a possible duplicate
    identity_match: Literal["strict", "demographic"] = "strict"
    # senders (MSH-3) whose PIDs listing identifiers of two patients link them; None: every sender
    trust_cross_references: tuple[str, ...] | None = None


AnyDestination = Annotated[
    MllpDestinationConfig
    | FileDestinationConfig
    | HttpDestinationConfig
    | FhirDestinationConfig
    | ChannelDestinationConfig
    | RecordDestinationConfig,
    Field(discriminator="type"),
]


class ChannelConfig(Frozen):
    """A channel: which messages from which listener it takes, what it does to them, where they go."""

    name: Name
    description: str = ""
    enabled: bool = True
    source: str
    accept: AcceptRule
    respond: Literal["after_store", "after_processing"] = "after_store"
    respond_timeout_seconds: Seconds = (
        30.0  # after_processing: answer AA (stored, queued) when destinations take longer
    )
    # Check each message against its version's structure (engine.hl7.validate): off; tolerant (findings
    # kept with the message); strict (a message that fails is answered AE and stored ERROR, unprocessed).
    validation: Literal["off", "tolerant", "strict"] = Field("off", alias="validate")
    duplicate_window_seconds: Seconds | None = (
        None  # same MSH-3.1/MSH-4.1 + MSH-10 within it: original ACK, not processed again
    )
    filters: tuple[FilterSpec, ...] = ()
    transforms: tuple[TransformSpec, ...] = ()
    destinations: tuple[AnyDestination, ...] = ()
    # Days the content of the channel's messages is kept once processed (engine.store.retention);
    # None: the store's retention_days, or forever.
    retention_days: Annotated[int, Field(ge=1)] | None = None

    @property
    def stores_only(self) -> bool:
        """True when the channel has no filters, transforms or destinations: storing is all it does."""
        return not (self.filters or self.transforms or self.destinations)

    def accepts(self, message_type: str, sending_application: str, sending_facility: str) -> bool:
        """True when this channel takes a "CODE^TRIGGER" (or "CODE") message from MSH-3.1/MSH-4.1.

        Case-sensitive.
        """
        return self.accept.matches(message_type, sending_application, sending_facility)
