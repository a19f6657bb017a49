"""The shapes of a pipeline's stages: filters and transforms.

A stage has a name and one method (Scrapy's pipeline is the model). The stages are built from the
config here (``engine.transforms``); a channel runs them (``engine.channels.pipeline``) and only the
channel turns what a stage returns into statuses, events and logs. They live with the stages, not
with the channel, so that dependencies run one way: channels use transforms, never the reverse.
"""

from __future__ import annotations

from typing import Protocol

from engine.hl7.message import Message


class Filter(Protocol):
    """Decides whether a message goes on; ``name`` says which filter it is (its YAML path)."""

    name: str

    def check(self, message: Message) -> str | None:
        """None when the message passes; otherwise the reason it is filtered out.

        Raises TransformError when the filter cannot be evaluated (the message goes to ERROR).
        """


class Transform(Protocol):
    """Changes a message; ``name`` says which transform it is (its YAML path)."""

    name: str

    def apply(self, message: Message) -> Message:
        """The transformed message (may be the same object, changed). Raises TransformError."""
