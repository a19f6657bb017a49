"""A call a store thread runs for the reactor: how it waits in a queue, runs, and how its failure is told.

Every writer thread (the store's, writer_lane.py, and the record's, record_lane.py) runs its
calls with ``run_call``: they differ only in the locks a call holds and in what counts its commits.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from engine.errors import StoreError
from engine.store.driver import describe
from engine.store.wal import WalGuard

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


def run_call(
    call: PendingCall,
    *,
    reactor,
    wal: WalGuard,
    held: Callable[[], AbstractContextManager],
    ran: Callable[[], None],
    thread: str,
) -> None:
    """Run one call on a writer thread and fire its Deferred on the reactor thread; never raises.

    Refused while ``wal`` refuses writes (it is full and checkpoints fail). The call runs inside
    ``held()`` (the write locks its thread takes); ``ran()`` is told inside it once the call has
    run, even if it failed: a call runs transactions of its own, and some may have committed.
    ``thread`` names the thread in the warning a failure logs.
    """
    try:
        if (refusal := wal.refusal()) is not None:
            raise refusal
        with held():
            try:
                result = call.function(*call.args, **call.kwargs)
            finally:
                ran()
    except Exception as error:  # whatever happens, the thread lives on to serve the next call
        failure = as_store_error(error, call.function.__name__)
        log.warn(
            "{thread} call {call} failed: {error}",
            thread=thread,
            call=call.function.__name__,
            error=str(failure),
        )
        reactor.callFromThread(call.deferred.errback, failure)
        return
    reactor.callFromThread(call.deferred.callback, result)
