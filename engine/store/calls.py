"""A call that a store thread runs for the reactor: how it waits in a queue, and how its failure is told."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from engine.errors import StoreError
from engine.store.driver import describe

log = Logger(namespace="engine.store")


@dataclass(slots=True)
class PendingCall:
    """A write waiting for its thread: ``function(*args, **kwargs)`` alone, in queue order."""

    function: Callable[..., Any]
    args: tuple
    kwargs: dict
    deferred: defer.Deferred


def fire(calls: list) -> None:
    """Fire Deferreds on the reactor thread, each on its own: one caller's error does not stop the others."""
    for fire_one, value in calls:
        try:
            fire_one(value)
        except Exception:
            log.failure("a store caller's callback failed")


def as_store_error(error: BaseException, action: str) -> StoreError:
    """``error`` itself when it is a StoreError, else a StoreError caused by it.

    A bug or a bad argument, but the caller's Deferred must fail.
    """
    if isinstance(error, StoreError):
        return error
    log.debug("{action} failed: {error!r}", action=action, error=error)  # its text may quote values
    wrapped = StoreError(f"{action} failed: {describe(error)}")
    wrapped.__cause__ = error
    return wrapped
