"""Intake: one frame in, the stored messages and the one honest answer out.

This is the only place that decides what a sender is told. What a frame holds is read by the
``Examiner`` (``engine.channels.examine``): on the reactor for a small single message, on a
thread for a batch or a large frame. The intake then stores everything it received (accepted or
rejected) and answers once the store has committed: a positive ACK is never sent for a message
that is not durably stored. Every answer given is stored with its message (after processing too),
except the NAK of an empty frame, which is only counted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from engine.channels.examine import Examiner, Verdict
from engine.channels.replies import batch_reply, salvage
from engine.errors import StoreError
from engine.hl7.ack import ENHANCED, AckError, ControlIds, Recipient, Sender
from engine.hl7.batch import Batch, looks_like_batch
from engine.hl7.charset import Decoded, decode, encode_lenient
from engine.hl7.message import Delimiters
from engine.lograte import LogRate
from engine.model import Status

if TYPE_CHECKING:
    from engine.channels.channel import Channel, Receipt
    from engine.channels.spec import ChannelConfig
    from engine.config import EngineSettings, ListenerConfig

log = Logger()

# Frames up to this size are read on the reactor unless they are batches; larger ones on a thread.
READ_ON_REACTOR_BYTES = 64 * 1024
# At most one warning per listener this often about empty frames (each one is counted).
EMPTY_FRAME_LOG_SECONDS = 60.0
_WHITESPACE = frozenset(b" \t\r\n\x0b\x0c")


class Intake:
    """Turns MLLP frames of one listener into stored messages and ACKs."""

    def __init__(
        self,
        listener: ListenerConfig,
        channels: Sequence[ChannelConfig],
        store,
        settings: EngineSettings,
        *,
        reactor,
        clock: Callable[[], datetime] | None = None,
        control_ids: Callable[[], str] | None = None,
        observer: Callable[[str, dict], None] | None = None,
        running: Mapping[str, Channel] | None = None,
    ):
        """``running``: the running channels by name, each offered the messages routed to it.

        ``reactor``: its thread pool reads large frames and batches; its clock paces warnings.
        """
        self.listener = listener
        self.running = running if running is not None else {}
        self.store = store
        self.reactor = reactor
        self.sender = Sender(settings.application, settings.facility, settings.default_version)
        self.default_charset = settings.default_charset
        self.clock = clock or (lambda: datetime.now(UTC))
        self.examiner = Examiner(
            listener,
            channels,
            sender=self.sender,
            default_charset=settings.default_charset,
            clock=self.clock,
            control_ids=control_ids or ControlIds(),
        )
        self.channels = channels
        self._observe = observer or (lambda event, fields: None)
        self._empty_lines = LogRate(EMPTY_FRAME_LOG_SECONDS, reactor.seconds)

    @property
    def channels(self) -> tuple[ChannelConfig, ...]:
        """The listener's channels, in file order (a reload replaces them)."""
        return self.examiner.channels

    @channels.setter
    def channels(self, channels: Sequence[ChannelConfig]) -> None:
        self.examiner.channels = channels
        # Validation costs milliseconds a message: a listener with a validating channel reads every frame
        # on a thread, never on the reactor.
        self._validating = any(channel.validation != "off" for channel in channels)

    # -- the FrameHandler interface of engine.listeners.mllp --------------------------------

    def handle(self, payload: bytes, peer: str) -> defer.Deferred:
        """Store what the frame holds, then fire with the reply payload (or None for no reply)."""
        received_at = self.clock()
        if not payload or (payload[0] in _WHITESPACE and not payload.strip()):
            return defer.succeed(self._empty_frame())
        decoded = None
        if len(payload) <= READ_ON_REACTOR_BYTES and not self._validating:
            decoded = decode(payload, self.default_charset)
            if not looks_like_batch(decoded.text):
                verdict = self.examiner.message(
                    decoded.text, payload, decoded, peer, received_at, receive=self._receive
                )
                if verdict.held_for is not None:  # an ACK: its channel takes it by a pass
                    self._hold(verdict)
                return self._settle_one(verdict, decoded, received_at)
        d = self._read_off_reactor(payload, peer, received_at, decoded)
        d.addCallback(self._settle_read, received_at)
        return d

    def internal_error(self, payload: bytes, reason: str) -> bytes:
        """The AR 207 for a frame whose handling failed unexpectedly (a bug, not bad input); never raises."""
        decoded = decode(payload, self.default_charset)
        recipient, delimiters = salvage(decoded.text)
        error = AckError(207, "internal error while processing the message; it may be resent later")
        return encode_lenient(self.examiner.ack(recipient, "AR", delimiters, (error,)), decoded.codec)

    def too_long(self, head: bytes, limit: int, peer: str) -> bytes:
        """The AR for a frame over the listener's size limit (answered before the connection closes)."""
        decoded = decode(head, self.default_charset)
        recipient, delimiters = salvage(decoded.text)
        error = AckError(207, f"frame larger than the listener's limit of {limit} bytes; not stored")
        self._observe("rejected", {"listener": self.listener.name, "code": "AR", "reason": 207})
        return encode_lenient(self.examiner.ack(recipient, "AR", delimiters, (error,)), decoded.codec)

    # -- reading -------------------------------------------------------------------------------

    def _receive(self, channel: str, text: str, codec: str, control_id: str) -> Receipt | None:
        running = self.running.get(channel)
        return running.receive(text, codec, control_id) if running is not None else None

    def _read_off_reactor(
        self, payload: bytes, peer: str, received_at: datetime, decoded: Decoded | None
    ) -> defer.Deferred:
        """Fires with Examiner.frame's (decoded, verdicts, batch), read on the reactor's thread pool.

        Every message of it is then held for its channel (offered on the reactor thread).
        """
        d = deferToThreadPool(
            self.reactor,
            self.reactor.getThreadPool(),
            self.examiner.frame,
            payload,
            peer,
            received_at,
            self.examiner.channels,
            decoded,
        )

        def held(read):
            for verdict in read[1]:
                if verdict.held_for is not None:
                    self._hold(verdict)
            return read

        return d.addCallback(held)

    def _hold(self, verdict: Verdict) -> None:
        """Tell the channel a message will be stored RECEIVED for it (when that channel runs)."""
        running = self.running.get(verdict.held_for)
        if running is not None:
            verdict.receipt = running.hold()

    def _settle_read(self, read: tuple[Decoded, list[Verdict], Batch | None], received_at: datetime):
        decoded, verdicts, batch = read
        if batch is None:
            return self._settle_one(verdicts[0], decoded, received_at)
        self._log_rejected(verdicts)
        d = self._store(verdicts) if verdicts else defer.succeed(None)
        # The reply repeats work per message (and builds each NAK when the store failed): off the reactor.
        d.addCallback(
            lambda stored: deferToThreadPool(
                self.reactor,
                self.reactor.getThreadPool(),
                lambda: encode_lenient(self._batch_reply(batch, verdicts, stored), decoded.codec),
            )
        )
        return d

    def _settle_one(self, verdict: Verdict, decoded: Decoded, received_at: datetime) -> defer.Deferred:
        """Store one message, then its answer."""
        if verdict.errors:
            self._log_rejected((verdict,))
        if verdict.accepted and verdict.channel.duplicate_window_seconds:
            d = self._check_duplicate(verdict, received_at)
            d.addCallback(lambda _: self._store([verdict]))
            d.addCallback(self._respond, verdict, decoded)
            return d
        # The common case, with one callback: a message costs each link of the chain again.
        return self.store.add(verdict.rows).addBoth(self._settle, verdict, decoded)

    def _settle(self, result: list[int] | Failure, verdict: Verdict, decoded: Decoded):
        """The answer to a single message once its add() finished: committed (its id) or failed."""
        if isinstance(result, Failure):
            return self._respond(self._store_failed(result, (verdict,)), verdict, decoded)
        self._stored((verdict,), result)
        return self._respond(None, verdict, decoded)

    def ingest_file(self, payload: bytes, source_file, *, peer: str) -> defer.Deferred:
        """Store a file's messages with the record of the file, in one transaction.

        Fires True when every one was accepted.
        """
        d = self._read_off_reactor(payload, peer, self.clock(), None)

        def store(read):
            verdicts = read[1]
            self._log_rejected(verdicts)
            stored = self._store(verdicts, source_file=source_file)
            return stored.addCallback(lambda result: (result, verdicts))

        def done(stored_and_verdicts):
            stored, verdicts = stored_and_verdicts
            if isinstance(stored, StoreError):
                raise stored
            return all(v.accepted or (not v.code and not v.errors) for v in verdicts)

        return d.addCallback(store).addCallback(done)

    # -- what is not stored, and what is logged ---------------------------------------------------

    def _empty_frame(self) -> bytes:
        """The NAK of an empty frame (no message in it): counted, not stored, warned about now and then.

        Any peer can send them by the thousand; a row and a log line each would let it fill both.
        """
        self._observe("empty_frame", {"listener": self.listener.name})
        if (count := self._empty_lines.due()) is not None:
            log.warn(
                "listener {listener}: {count} empty frame(s) answered AR (not stored)",
                listener=self.listener.name,
                count=count,
            )
        error = AckError(100, "empty frame: it holds no message", ("MSH",))
        return self.examiner.ack(Recipient(), "AR", Delimiters.DEFAULT, (error,)).encode("ascii")

    def _log_rejected(self, verdicts: Sequence[Verdict]) -> None:
        """One warning for the messages of a frame that were refused: codes only, reasons at debug.

        A reason quotes the message's fields (its type, version, sender): patient data stays in
        the store, where each rejected message keeps its reason.
        """
        refused = [v for v in verdicts if v.errors]
        if not refused:
            return
        codes = sorted({f"{v.code} {e.code}" for v in refused for e in v.errors})
        log.warn(
            "rejected {count} message(s) on listener {listener}: {codes}",
            count=len(refused),
            listener=self.listener.name,
            codes=", ".join(codes),
        )
        for verdict in refused:
            log.debug(
                "rejected on listener {listener}: {reason}",
                listener=self.listener.name,
                reason=verdict.rows[0].error if verdict.rows else "",
            )

    def _store(self, verdicts: Sequence[Verdict], *, source_file=None) -> defer.Deferred:
        """Store every row of the frame in one unit; fires with None on commit, or the StoreError."""
        rows = [row for o in verdicts for row in o.rows]
        d = self.store.add(rows, source_file=source_file) if source_file is not None else self.store.add(rows)
        d.addCallbacks(
            lambda ids: self._stored(verdicts, ids), lambda failure: self._store_failed(failure, verdicts)
        )
        return d

    def _stored(self, verdicts: Sequence[Verdict], ids: list[int]) -> None:
        received: dict[str, list[tuple[Receipt, int]]] = {}
        counts: dict[tuple[str, str], int] = {}
        for verdict, message_id in zip(verdicts, ids):  # one row per verdict
            verdict.message_id = message_id
            event = (
                "rejected"
                if verdict.errors
                else "duplicate"
                if verdict.duplicate_of is not None
                else "accepted"
            )
            counts[event, verdict.code] = counts.get((event, verdict.code), 0) + 1
            if verdict.receipt is not None:
                received.setdefault(verdict.receipt.channel.name, []).append((verdict.receipt, message_id))
        for (event, code), count in counts.items():  # a batch of thousands is a few events
            self._observe(event, {"listener": self.listener.name, "code": code, "count": count})
        for name, stored in received.items():  # once per channel: one wake for the frame
            # The channel running under that name now: a reload may have replaced the one that
            # made the receipts while the messages were on their way to the store.
            self.running.get(name, stored[0][0].channel).stored(stored)
        return None

    def _check_duplicate(self, verdict: Verdict, received_at: datetime) -> defer.Deferred:
        """Look for the same sender + control id within the channel's window.

        A hit is stored FILTERED and answered with the original ACK.
        """
        since = received_at - timedelta(seconds=verdict.channel.duplicate_window_seconds)
        d = self.store.find_duplicate(verdict.sender[0], verdict.sender[1], verdict.control_id, since=since)

        def found(original) -> None:
            if original is None:
                return
            original_id, original_ack = original
            if verdict.receipt is not None:  # stored FILTERED: nothing for the channel to process
                verdict.receipt.channel.dropped(verdict.receipt)
                verdict.receipt = None
            verdict.duplicate_of = original_ack or encode_lenient(verdict.ack, "utf-8")
            row = verdict.rows[0]
            verdict.rows = [
                replace(
                    row,
                    status=Status.FILTERED,
                    error=f"duplicate of message {original_id} (same sender and control id"
                    f" within {verdict.channel.duplicate_window_seconds:g}s)",
                    ack=original_ack,
                    ack_code=row.ack_code or verdict.code,
                )
            ]

        def lookup_failed(failure: Failure) -> None:
            # The store is failing: the add that follows fails too and the sender gets AR to resend later.
            log.warn(
                "duplicate lookup failed on listener {listener}: {error}",
                listener=self.listener.name,
                error=failure.getErrorMessage(),
            )

        d.addCallbacks(found, lookup_failed)
        return d

    def _store_failed(self, failure: Failure, verdicts: Sequence[Verdict] = ()) -> StoreError:
        _not_stored(verdicts)
        error = failure.value if failure.check(StoreError) else StoreError(failure.getErrorMessage())
        log.error(
            "message store failed on listener {listener}: {error}",
            listener=self.listener.name,
            error=str(error),
        )
        self._observe("store_failed", {"listener": self.listener.name})
        return error

    def _answer(self, verdict: Verdict, stored: object) -> str | None:
        """The ACK text for one verdict once its storing finished (``stored`` is None or a StoreError)."""
        if not verdict.code:
            return None
        if isinstance(stored, StoreError) and verdict.code[1] == "A":
            code = "CE" if verdict.enhanced else "AR"
            error = AckError(
                206 if stored.locked else 207, "the message could not be stored now; resend it later"
            )
            text = self.examiner.ack(verdict.recipient, code, verdict.delimiters, (error,))
        else:
            code, text = verdict.code, verdict.ack
        if self.listener.honour_accept_ack_type and verdict.enhanced:
            wanted = verdict.accept_ack_type or "AL"
            positive = code == "CA"
            if wanted == "NE" or (wanted == "ER" and positive) or (wanted == "SU" and not positive):
                return None
        return text

    def _single_reply(self, stored: StoreError | None, verdict: Verdict, decoded: Decoded) -> bytes | None:
        text = self._answer(verdict, stored)
        return None if text is None else encode_lenient(text, decoded.codec)

    def _respond(self, stored: StoreError | None, verdict: Verdict, decoded: Decoded):
        """The reply once stored.

        At once (after_store), or once the destinations settled (after_processing).
        """
        if verdict.duplicate_of is not None and stored is None:
            return verdict.duplicate_of
        if (
            stored is not None
            or not verdict.accepted
            or verdict.channel.respond != "after_processing"
            or verdict.receipt is None
        ):
            return self._single_reply(stored, verdict, decoded)
        channel = self.running.get(verdict.channel.name, verdict.receipt.channel)  # a reload may replace it
        waiter = channel.wait_for(verdict.message_id, verdict.channel.respond_timeout_seconds)
        waiter.addCallback(self._processed, verdict, decoded)
        waiter.addErrback(self._processing_timed_out, verdict, decoded)
        return waiter

    def _processed(self, settled, verdict: Verdict, decoded: Decoded) -> defer.Deferred:
        """Answer with what the destinations made of the message (after_processing)."""
        status, reason, results = settled
        if status == Status.ERROR:
            downstream = {r.response_code for r in results}
            # A transform error or a downstream AE says the content is at fault (AE); anything else is AR.
            code = "AE" if "AE" in downstream or not results else "AR"
            if verdict.enhanced:
                code = ENHANCED[code]
            verdict.code = code
            verdict.ack = self.examiner.ack(
                verdict.recipient, code, verdict.delimiters, (AckError(207, reason or "processing failed"),)
            )
        return self._record_answer(verdict, decoded)

    def _processing_timed_out(self, failure: Failure, verdict: Verdict, decoded: Decoded) -> defer.Deferred:
        failure.trap(defer.TimeoutError)
        # Stored and queued: the positive answer is honest, the destinations catch up on their own.
        return self._record_answer(verdict, decoded)

    def _record_answer(self, verdict: Verdict, decoded: Decoded) -> defer.Deferred:
        """Store the answer decided after processing with its message, then fire with the reply.

        The sender is answered even when that write fails: the message itself is stored and
        processed, only the record of its answer is missing (and the failure logged).
        """
        reply = self._single_reply(None, verdict, decoded)
        d = self.store.record_answer(
            verdict.message_id, verdict.code, encode_lenient(verdict.ack, decoded.codec)
        )

        def not_recorded(failure: Failure) -> None:
            log.error(
                "listener {listener}: the answer to message {id} could not be stored: {error}",
                listener=self.listener.name,
                id=verdict.message_id,
                error=failure.getErrorMessage(),
            )

        return d.addErrback(not_recorded).addCallback(lambda _: reply)

    # -- batches -------------------------------------------------------------------------------

    def _batch_reply(self, batch: Batch, verdicts: Sequence[Verdict], stored: object) -> str:
        """One frame answering a batch: one ACK per message in the batch's envelope."""
        delimiters = batch.delimiters or (verdicts[0].delimiters if verdicts else Delimiters.DEFAULT)
        acks = [a for a in (self._answer(o, stored) for o in verdicts) if a is not None]
        return batch_reply(
            batch,
            acks,
            sender=self.sender,
            timestamp=self.clock(),
            control_id=self.examiner.control_ids(),
            delimiters=delimiters,
        )


def _not_stored(verdicts: Sequence[Verdict]) -> None:
    """Tell the channels the messages were offered to that they were not stored."""
    for verdict in verdicts:
        if verdict.receipt is not None:
            verdict.receipt.channel.dropped(verdict.receipt)
