"""A destination's queue settings (``queue:``), apart so a command can read them without the channels.

``engine.channels.spec`` puts them in each destination; ``engine.configstore`` reads them for
``hl7engine channel list`` with the same model, so both report a problem the same way.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from engine.configtypes import Frozen, Seconds

__all__ = ["QueueSettings"]


class QueueSettings(Frozen):
    """A destination's durable queue: order, retries with exponential backoff and jitter, giving up."""

    # block keeps order (the head waits); skip goes on with the next; halt stops the queue at its
    # first ERROR until an operator resumes it (engine.store.controls)
    on_error: Literal["block", "skip", "halt"] = "block"
    max_attempts: Annotated[int, Field(ge=1)] | None = 10
    max_age_seconds: Seconds | None = None
    retry_initial_seconds: Seconds = 1.0
    retry_max_seconds: Seconds = 300.0
    retry_multiplier: Annotated[float, Field(ge=1.0, le=10.0)] = 2.0
    retry_jitter: Annotated[float, Field(ge=0.0, le=1.0)] = 0.2
