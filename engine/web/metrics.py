"""Prometheus metrics, fed by the events the engine already emits (an observer, as Scrapy's stats are).

The intake, the channel runners, the MLLP factories and the file sources call an observer with an
event name and its fields; they never import prometheus_client. ``Metrics.observe`` turns those events into
counters on a registry of our own (never the process-global one), and a LoopingCall asks the
store for the depth of every destination queue every few seconds. Labels are names from the
configuration and codes, never anything from a message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["Metrics", "Observer", "fanout"]

log = Logger(namespace="engine.web")

Observer = Callable[[str, Mapping[str, Any]], None]

QUEUE_POLL_SECONDS = 5.0


def fanout(*observers: Observer | None) -> Observer:
    """One observer that passes every event to each of ``observers`` (None ones skipped).

    One that fails never stops the others.
    """
    targets = tuple(o for o in observers if o is not None)

    def observe(event: str, fields: Mapping[str, Any]) -> None:
        for target in targets:
            try:
                target(event, fields)
            except Exception:  # an observer must never break the message path that called it
                log.failure(
                    "observer {observer} failed on event {event}",
                    observer=getattr(target, "__qualname__", repr(target)),
                    event=event,
                )

    return observe


class Metrics:
    """The engine's Prometheus metrics: ``observe`` is its observer, ``exposition`` the /metrics body."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.received = Counter(
            "hl7engine_messages_received",
            "Messages stored at intake (accepted, duplicate or rejected),"
            " by listener and the ACK code answered",
            ["listener", "ack_code"],
            registry=r,
        )
        self.rejected = Counter(
            "hl7engine_messages_rejected",
            "Messages refused at intake (stored as REJECTED, or frames over the size limit),"
            " by listener and ACK code",
            ["listener", "ack_code"],
            registry=r,
        )
        self.duplicates = Counter(
            "hl7engine_messages_duplicate",
            "Messages recognised as duplicates and answered with the original ACK",
            ["listener"],
            registry=r,
        )
        self.store_failures = Counter(
            "hl7engine_store_failures",
            "Frames whose messages the store could not commit (answered AR/CE 206/207)",
            ["listener"],
            registry=r,
        )
        self.processed = Counter(
            "hl7engine_messages_processed",
            "Messages processed by a channel, by the status they reached",
            ["channel", "status"],
            registry=r,
        )
        self.deliveries = Counter(
            "hl7engine_deliveries",
            "Delivery attempts, by channel, destination and outcome (SENT, RETRY, ERROR)",
            ["channel", "destination", "outcome"],
            registry=r,
        )
        self.connections_open = Gauge(
            "hl7engine_mllp_connections_open", "MLLP connections open now", ["listener"], registry=r
        )
        self.connections = Counter(
            "hl7engine_mllp_connections", "MLLP connections accepted", ["listener"], registry=r
        )
        self.bytes_discarded = Counter(
            "hl7engine_mllp_bytes_discarded",
            "Bytes received outside MLLP frames and dropped",
            ["listener"],
            registry=r,
        )
        self.frames_too_long = Counter(
            "hl7engine_mllp_frames_too_long",
            "Frames over the listener's max_frame_bytes (answered AR, connection closed)",
            ["listener"],
            registry=r,
        )
        self.connections_refused = Counter(
            "hl7engine_mllp_connections_refused",
            "MLLP connections closed unread: the peer is outside allowed_networks (reason network) or"
            " the listener had max_connections open (reason max_connections)",
            ["listener", "reason"],
            registry=r,
        )
        self.frame_timeouts = Counter(
            "hl7engine_mllp_frame_timeouts",
            "MLLP connections closed because a frame did not arrive whole within frame_timeout_seconds",
            ["listener"],
            registry=r,
        )
        self.tls_failures = Counter(
            "hl7engine_mllp_tls_failures",
            "MLLP connections ended by TLS: no handshake (e.g. a plain TCP client), a refused certificate",
            ["listener"],
            registry=r,
        )
        self.files = Counter(
            "hl7engine_file_source_files",
            "Files a file source took, by outcome: done, error (a message rejected), recovered (stored"
            " before a crash, only moved) or failed (left for the next poll)",
            ["listener", "outcome"],
            registry=r,
        )
        self.empty_frames = Counter(
            "hl7engine_mllp_empty_frames",
            "Empty frames (no message in them), answered AR and not stored",
            ["listener"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "hl7engine_queue_depth",
            "Deliveries waiting in a destination's queue (QUEUED), polled from the store",
            ["channel", "destination"],
            registry=r,
        )
        self.queue_poll_failures = Counter(
            "hl7engine_queue_depth_poll_failures", "Queue depth polls the store could not answer", registry=r
        )
        self.logins_refused = Counter(
            "hl7engine_web_logins_refused",
            "Logins refused by the web server: wrong credentials (password), or not checked because of"
            " too many failures for the user or from the address, or too many checks waiting (checks)",
            ["reason"],
            registry=r,
        )
        self.requests_too_large = Counter(
            "hl7engine_web_requests_too_large",
            "HTTP requests refused because their body (413) or headers (431) were over the limit",
            ["what"],
            registry=r,
        )
        self.leases_held = Gauge(
            "hl7engine_leases_held",
            "Leases this process holds now (channel:, queue: and job: keys), as it last counted them;"
            " 0 when it shares no store with other processes",
            registry=r,
        )
        self.leases_lost = Counter(
            "hl7engine_leases_lost",
            "Leases this process lost while it held them (not renewed in time; another process may take"
            " the work over)",
            registry=r,
        )
        self.wakeups = Counter(
            "hl7engine_wakeups",
            "Wake-ups heard from the other processes of the store, by the kind of their key (channel,"
            " queue, urgent, settled); one key heard several times in one reactor turn counts once",
            ["kind"],
            registry=r,
        )
        self.wakeups_ignored = Counter(
            "hl7engine_wakeups_ignored",
            "Datagrams on the wake-up port ignored: from an address that is no peer (stranger), or"
            " not a key (not_a_key)",
            ["reason"],
            registry=r,
        )
        self.queue_paused = Gauge(
            "hl7engine_queue_paused",
            "1 while an operator's pause (or on_error: halt) holds a destination's queue, else 0,"
            " as this process's dispatcher applies it",
            ["channel", "destination"],
            registry=r,
        )
        self.alert_firing = Gauge(
            "hl7engine_alert_firing",
            "1 while an alert rule fires, 0 once it cleared (in the process that evaluates the rules)",
            ["rule"],
            registry=r,
        )
        self._handlers: dict[str, Callable[[Mapping[str, Any]], None]] = {
            "accepted": self._accepted,
            "duplicate": self._duplicate,
            "rejected": self._rejected,
            "store_failed": lambda f: self.store_failures.labels(f["listener"]).inc(),
            "processed": lambda f: self.processed.labels(f["channel"], f["status"]).inc(),
            "delivery": lambda f: self.deliveries.labels(f["channel"], f["destination"], f["outcome"]).inc(),
            "connection_opened": self._connection_opened,
            "connection_closed": lambda f: self.connections_open.labels(f["listener"]).dec(
                f.get("amount", 1)
            ),
            "bytes_discarded": lambda f: self.bytes_discarded.labels(f["listener"]).inc(f["amount"]),
            "empty_frame": lambda f: self.empty_frames.labels(f["listener"]).inc(),
            "frame_too_long": lambda f: self.frames_too_long.labels(f["listener"]).inc(f.get("amount", 1)),
            "login_refused": lambda f: self.logins_refused.labels(f["reason"]).inc(),
            "request_too_large": lambda f: self.requests_too_large.labels(f["what"]).inc(),
            "connection_not_allowed": self._refused("network"),
            "connection_over_limit": self._refused("max_connections"),
            "frame_timeout": lambda f: self.frame_timeouts.labels(f["listener"]).inc(f.get("amount", 1)),
            "tls_failed": lambda f: self.tls_failures.labels(f["listener"]).inc(f.get("amount", 1)),
            "file_taken": lambda f: self.files.labels(f["listener"], f["outcome"]).inc(),
            "leases_held": lambda f: self.set_leases_held(f["count"]),
            "lease_lost": lambda f: self.leases_lost.inc(),
            "wakeup": lambda f: self.wakeups.labels(f["key"].partition(":")[0]).inc(),
            "wakeup_ignored": lambda f: self.wakeups_ignored.labels(f["reason"]).inc(),
            "queue_paused": lambda f: self.queue_paused.labels(f["channel"], f["destination"]).set(
                1 if f["paused"] else 0
            ),
            "alert": lambda f: self.alert_firing.labels(f["rule"]).set(1 if f["firing"] else 0),
        }
        self._known_queues: set[tuple[str, str]] = set()
        self._poll: task.LoopingCall | None = None
        self._poll_failing = False

    # -- events --------------------------------------------------------------------------------

    def observe(self, event: str, fields: Mapping[str, Any]) -> None:
        """Count one engine event; events it does not know are ignored. Never raises into the caller."""
        handler = self._handlers.get(event)
        if handler is None:
            return
        try:
            handler(fields)
        except Exception:  # a metrics bug must not change what a sender is answered
            log.failure("metrics: could not count event {event}", event=event)

    def connection_observer(self, listener: str) -> Callable[[str, int], None]:
        """The observer of one listener's MLLPServerFactory (``(event, amount)``), feeding ``observe``."""
        return lambda event, amount: self.observe(event, {"listener": listener, "amount": amount})

    def _refused(self, reason: str) -> Callable[[Mapping[str, Any]], None]:
        return lambda f: self.connections_refused.labels(f["listener"], reason).inc(f.get("amount", 1))

    def _accepted(self, fields: Mapping[str, Any]) -> None:
        self.received.labels(fields["listener"], _code(fields)).inc(fields.get("count", 1))

    def _duplicate(self, fields: Mapping[str, Any]) -> None:
        self._accepted(fields)
        self.duplicates.labels(fields["listener"]).inc(fields.get("count", 1))

    def _rejected(self, fields: Mapping[str, Any]) -> None:
        # Without a count the frame was too long and never stored: refused, but not received.
        if "count" in fields:
            self._accepted(fields)
        self.rejected.labels(fields["listener"], _code(fields)).inc(fields.get("count", 1))

    def _connection_opened(self, fields: Mapping[str, Any]) -> None:
        self.connections_open.labels(fields["listener"]).inc(fields.get("amount", 1))
        self.connections.labels(fields["listener"]).inc(fields.get("amount", 1))

    def set_leases_held(self, count: int) -> None:
        """How many leases this process holds now (``StoreLeases`` tells after each renewal or change)."""
        self.leases_held.set(count)

    # -- queue depths --------------------------------------------------------------------------

    def poll_queue_depths(self, store) -> defer.Deferred:
        """Ask the store for every queue's depth once and set the gauges (an emptied queue goes to 0)."""
        d = store.queue_depths()
        d.addCallbacks(self._set_depths, self._poll_failed)
        return d

    def start_polling(self, store, *, clock, interval: float = QUEUE_POLL_SECONDS) -> None:
        """Poll the queue depths now and every ``interval`` seconds.

        The next poll waits for the previous one.
        """
        self.stop_polling()
        self._poll = task.LoopingCall(self.poll_queue_depths, store)
        self._poll.clock = clock
        self._poll.start(interval, now=True).addErrback(
            lambda failure: log.failure("metrics: queue depth polling stopped", failure)
        )

    def stop_polling(self) -> None:
        """Stop the polling started by ``start_polling`` (idempotent)."""
        if self._poll is not None and self._poll.running:
            self._poll.stop()
        self._poll = None

    def _set_depths(self, depths: Mapping[tuple[str, str], int]) -> None:
        for key in self._known_queues - set(depths):
            self.queue_depth.labels(*key).set(0)
        for (channel, destination), depth in depths.items():
            self.queue_depth.labels(channel, destination).set(depth)
        self._known_queues |= set(depths)
        if self._poll_failing:
            log.info("metrics: queue depths are readable again")
        self._poll_failing = False

    def _poll_failed(self, failure: Failure) -> None:
        self.queue_poll_failures.inc()
        if not self._poll_failing:  # say it once, not every few seconds while the store is down
            log.warn("metrics: could not read the queue depths: {error}", error=failure.getErrorMessage())
        self._poll_failing = True

    # -- exposition ----------------------------------------------------------------------------

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text format of every metric, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _code(fields: Mapping[str, Any]) -> str:
    # An ACK received as a message is stored but never answered: code ''.
    return fields.get("code") or "none"
