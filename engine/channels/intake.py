"""Intake: one frame in, the stored messages and the one honest answer out.

This is the only place that decides what a sender is told. It reads only the MSH of each
message (the hot path never parses a whole message), validates it, splits batches, picks the
channels of the listener that accept the message, stores everything it received (accepted or
rejected) and answers once the store has committed: a positive ACK is never sent for a message
that is not durably stored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from engine.channels.replies import batch_reply, salvage
from engine.errors import HL7Error, StoreError
from engine.hl7.ack import ENHANCED, AckError, ControlIds, Recipient, Sender, build_ack, is_enhanced
from engine.hl7.batch import Batch, looks_like_batch, split_batch
from engine.hl7.charset import Decoded, decode, encode
from engine.hl7.header import Header, is_ack, patient_id, read_header, validate_header
from engine.hl7.message import Delimiters
from engine.model import NewMessage, Status

if TYPE_CHECKING:
    from engine.channels.channel import Channel, Receipt
    from engine.channels.spec import ChannelConfig
    from engine.config import EngineSettings, ListenerConfig

log = Logger()


# Routing choices remembered per listener, per (type, sender); past this many the memory starts again.
_MAX_ROUTES = 4096


def _stored_status(channel: ChannelConfig | None) -> Status:
    """A store-only channel has nothing left to do: its message is final as stored (as if processed)."""
    return Status.TRANSFORMED if channel is not None and channel.stores_only else Status.RECEIVED


def namespace_id(hd: str, delimiters: Delimiters) -> str:
    """The first component of an HD field (MSH-3/4): what routing compares senders by."""
    return hd.split(delimiters.component, 1)[0]


@dataclass
class _Outcome:
    """What became of one message of a frame: the rows to store and the answer to give."""

    rows: list[NewMessage]
    recipient: Recipient
    delimiters: Delimiters
    code: str  # AA/AE/AR (original) or CA/CE/CR (enhanced); '' = never answered (an ACK)
    errors: tuple[AckError, ...] = ()
    enhanced: bool = False
    accept_ack_type: str = ""
    control_id: str = ""
    ack: str = field(default="")
    channel: ChannelConfig | None = None
    sender: tuple[str, str] = ("", "")  # MSH-3.1, MSH-4.1: who, with control_id, for duplicate detection
    message_id: int | None = None  # set once stored
    duplicate_of: bytes | None = None  # the original ACK, when this is a duplicate
    receipt: Receipt | None = None  # what its channel made of it, when stored RECEIVED for one

    @property
    def accepted(self) -> bool:
        """Stored for processing (not rejected, not an ACK, not a duplicate)."""
        return self.channel is not None and bool(self.code) and not self.errors and self.duplicate_of is None


class Intake:
    """Turns MLLP frames of one listener into stored messages and ACKs."""

    def __init__(
        self,
        listener: ListenerConfig,
        channels: Sequence[ChannelConfig],
        store,
        settings: EngineSettings,
        *,
        clock: Callable[[], datetime] | None = None,
        control_ids: Callable[[], str] | None = None,
        observer: Callable[[str, dict], None] | None = None,
        running: Mapping[str, Channel] | None = None,
    ):
        """``running``: the running channels by name, each offered the messages routed to it."""
        self.listener = listener
        self.running = running if running is not None else {}
        self.channels = channels
        self.store = store
        self.sender = Sender(settings.application, settings.facility, settings.default_version)
        self.default_charset = settings.default_charset
        self.processing_ids = frozenset(listener.processing_ids) if listener.processing_ids else None
        self.clock = clock or (lambda: datetime.now(UTC))
        self.control_ids = control_ids or ControlIds()
        self._observe = observer or (lambda event, fields: None)

    @property
    def channels(self) -> tuple[ChannelConfig, ...]:
        """The listener's channels, in file order (a reload replaces them)."""
        return self._channels

    @channels.setter
    def channels(self, channels: Sequence[ChannelConfig]) -> None:
        self._channels = tuple(channels)
        self._routes: dict[tuple[str, str, str, str], ChannelConfig | None] = {}

    # -- the FrameHandler interface of engine.listeners.mllp --------------------------------

    def handle(self, payload: bytes, peer: str) -> defer.Deferred:
        """Store what the frame holds, then fire with the reply payload (or None for no reply)."""
        received_at = self.clock()
        decoded = decode(payload, self.default_charset)
        outcomes, batch = self._outcomes(payload, decoded, peer, received_at)
        if batch is not None:
            d = self._store(outcomes) if outcomes else defer.succeed(None)
            d.addCallback(lambda stored: encode(self._batch_reply(batch, outcomes, stored), decoded.codec))
            return d
        outcome = outcomes[0]
        if outcome.accepted and outcome.channel.duplicate_window_seconds:
            d = self._check_duplicate(outcome, received_at)
            d.addCallback(lambda _: self._store([outcome]))
            d.addCallback(self._respond, outcome, decoded)
            return d
        # The common case, with one callback: a message costs each link of the chain again.
        return self.store.add(outcome.rows).addBoth(self._settle, outcome, decoded)

    def _settle(self, result: list[int] | Failure, outcome: _Outcome, decoded: Decoded):
        """The answer to a single message once its add() finished: committed (its id) or failed."""
        if isinstance(result, Failure):
            return self._respond(self._store_failed(result, (outcome,)), outcome, decoded)
        self._stored((outcome,), result)
        return self._respond(None, outcome, decoded)

    def ingest_file(self, payload: bytes, source_file, *, peer: str) -> defer.Deferred:
        """Store a file's messages with the record of the file, in one transaction.

        Fires True when every one was accepted.
        """
        decoded = decode(payload, self.default_charset)
        outcomes, _ = self._outcomes(payload, decoded, peer, self.clock())
        d = self._store(outcomes, source_file=source_file)

        def done(stored):
            if isinstance(stored, StoreError):
                raise stored
            return all(o.accepted or (not o.code and not o.errors) for o in outcomes)

        d.addCallback(done)
        return d

    def _outcomes(
        self, payload: bytes, decoded: Decoded, peer: str, received_at: datetime
    ) -> tuple[list[_Outcome], Batch | None]:
        """What a frame or file holds.

        One message, or a batch split into its messages (a broken batch is one rejection).
        """
        if not looks_like_batch(decoded.text):
            return [self._examine(decoded.text, payload, decoded, peer, received_at)], None
        try:
            batch = split_batch(decoded.text)
        except HL7Error as exc:
            recipient, delimiters = salvage(decoded.text)
            error = AckError(exc.code, str(exc), exc.location)
            base = dict(
                raw=payload,
                received_at=received_at,
                listener=self.listener.name,
                peer=peer,
                charset=decoded.charset,
            )
            return [self._reject(base, decoded.codec, recipient, delimiters, None, (error,))], None
        outcomes = [
            self._examine(
                text,
                encode(text, decoded.codec),
                decoded,
                peer,
                received_at,
                batch_id=batch.batch_control_id,
                index=i,
            )
            for i, text in enumerate(batch.messages, start=1)
        ]
        return outcomes, batch

    def internal_error(self, payload: bytes, reason: str) -> bytes:
        """The AR 207 for a frame whose handling failed unexpectedly (a bug, not bad input)."""
        decoded = decode(payload, self.default_charset)
        recipient, delimiters = salvage(decoded.text)
        error = AckError(207, "internal error while processing the message; it may be resent later")
        return encode(self._ack(recipient, "AR", delimiters, (error,)), decoded.codec)

    def too_long(self, head: bytes, limit: int, peer: str) -> bytes:
        """The AR for a frame over the listener's size limit (answered before the connection closes)."""
        decoded = decode(head, self.default_charset)
        recipient, delimiters = salvage(decoded.text)
        error = AckError(207, f"frame larger than the listener's limit of {limit} bytes; not stored")
        self._observe("rejected", {"listener": self.listener.name, "code": "AR", "reason": 207})
        return encode(self._ack(recipient, "AR", delimiters, (error,)), decoded.codec)

    # -- single messages -----------------------------------------------------------------------

    def _examine(
        self,
        text: str,
        raw: bytes,
        decoded: Decoded,
        peer: str,
        received_at: datetime,
        *,
        batch_id: str | None = None,
        index: int | None = None,
    ) -> _Outcome:
        """Decide what to do with one message: rows to store and the code to answer with."""
        base = dict(
            raw=raw,
            received_at=received_at,
            listener=self.listener.name,
            peer=peer,
            charset=decoded.charset,
            batch_control_id=batch_id,
            batch_index=index,
        )
        try:
            header = read_header(text)
        except HL7Error as exc:
            recipient, delimiters = salvage(text)
            error = AckError(exc.code, str(exc), exc.location)
            return self._reject(base, decoded.codec, recipient, delimiters, None, (error,))

        base["patient_id"] = patient_id(text, header.delimiters)
        recipient = Recipient.of(header)
        problems = [AckError(p.code, p.text, p.location) for p in validate_header(header)]
        if self.processing_ids is not None and header.processing_id not in self.processing_ids:
            accepted = ", ".join(sorted(self.processing_ids))
            problems.append(
                AckError(
                    202,
                    f"processing id {header.processing_id!r} not accepted on this listener"
                    f" (accepted: {accepted})",
                    ("MSH", 1, 11),
                )
            )
        sender = (
            namespace_id(header.sending_application, header.delimiters),
            namespace_id(header.sending_facility, header.delimiters),
        )
        if problems or is_ack(header):
            return self._examine_exception(header, recipient, problems, sender, base, decoded)

        channel = self._channel_for(header, sender)
        if channel is None:
            error = AckError(
                200,
                f"no channel on listener {self.listener.name!r} accepts"
                f" {header.message_type or '(no type)'} from {sender[0] or '(no sender)'}",
                ("MSH", 1, 9),
            )
            return self._reject(
                {**base, **header_columns(header)},
                decoded.codec,
                recipient,
                header.delimiters,
                header,
                (error,),
            )

        enhanced = is_enhanced(header)
        code = "CA" if enhanced else "AA"
        ack = self._ack(recipient, code, header.delimiters, ())
        # After processing, the answer depends on the destinations: it is not known (nor stored) yet.
        ack_bytes = (
            None if channel.respond == "after_processing" and index is None else encode(ack, decoded.codec)
        )
        status = _stored_status(channel)
        running = self.running.get(channel.name) if status == Status.RECEIVED else None
        receipt = running.receive(text, decoded.codec, header.control_id) if running is not None else None
        processed = receipt.result if receipt is not None else None
        row = NewMessage(
            raw=raw,
            received_at=received_at,
            listener=self.listener.name,
            peer=peer,
            status=status if processed is None else processed.status,
            channel=channel.name,
            **header_columns(header),
            charset=decoded.charset,
            ack_code=code if ack_bytes else "",
            ack=ack_bytes,
            error="" if processed is None else processed.reason,
            batch_control_id=batch_id,
            batch_index=index,
            patient_id=base["patient_id"],
            transformed=None if processed is None else processed.transformed,
            deliveries=None if processed is None else processed.deliveries,
        )
        return _Outcome(
            [row],
            recipient,
            header.delimiters,
            code=code,
            enhanced=enhanced,
            accept_ack_type=header.accept_ack_type,
            control_id=header.control_id,
            ack=ack,
            channel=channel,
            sender=sender,
            receipt=receipt,
        )

    def _examine_exception(
        self,
        header: Header,
        recipient: Recipient,
        problems: list[AckError],
        sender: tuple[str, str],
        base: dict,
        decoded: Decoded,
    ) -> _Outcome:
        """An acknowledgement (stored, never answered) or a message whose header is refused."""
        fields = header_columns(header)
        if is_ack(header):
            # An acknowledgement is stored, never acknowledged (that would loop between engines),
            # not even when its header is faulty: the reason is kept with it instead.
            channel = self._channel_for(header, sender)
            reason = "; ".join(f"{p.code} {p.text}" for p in problems)
            status = Status.REJECTED if problems else _stored_status(channel)
            rows = [
                NewMessage(
                    **base, **fields, channel=channel.name if channel else None, status=status, error=reason
                )
            ]
            # Never processed at intake: its channel takes it in turn, by a pass.
            running = self.running.get(channel.name) if status == Status.RECEIVED else None
            return _Outcome(
                rows,
                recipient,
                header.delimiters,
                code="",
                control_id=header.control_id,
                receipt=running.hold() if running is not None else None,
            )

        return self._reject(
            {**base, **fields}, decoded.codec, recipient, header.delimiters, header, tuple(problems)
        )

    def _channel_for(self, header: Header, sender: tuple[str, str]) -> ChannelConfig | None:
        """The first channel of the listener, in file order, that accepts the message, like a rule list.

        Senders are compared by (MSH-3.1, MSH-4.1). The choice depends on nothing else, so it is
        remembered per (type, sender): a feed has few.
        """
        key = (header.message_code, header.trigger_event, *sender)
        try:
            return self._routes[key]
        except KeyError:
            pass
        message_type = "^".join(filter(None, (header.message_code, header.trigger_event)))
        chosen = next((channel for channel in self._channels if channel.accepts(message_type, *sender)), None)
        if len(self._routes) >= _MAX_ROUTES:  # bounded: a sender inventing ids must not grow memory
            self._routes.clear()
        self._routes[key] = chosen
        return chosen

    def _reject(
        self,
        base: dict,
        codec: str,
        recipient: Recipient,
        delimiters: Delimiters,
        header: Header | None,
        errors: tuple[AckError, ...],
    ) -> _Outcome:
        enhanced = header is not None and is_enhanced(header)
        # A bad header (type, event, processing id, version, unreadable MSH) is AR in the standard's terms.
        code = "CR" if enhanced else "AR"
        outcome = _Outcome(
            [],
            recipient,
            delimiters,
            code=code,
            errors=errors,
            enhanced=enhanced,
            accept_ack_type=header.accept_ack_type if header else "",
            control_id=recipient.control_id,
        )
        outcome.ack = self._ack(recipient, code, delimiters, errors)
        reason = "; ".join(f"{e.code} {e.text}" for e in errors)
        outcome.rows = [
            NewMessage(
                **base, status=Status.REJECTED, ack_code=code, ack=encode(outcome.ack, codec), error=reason
            )
        ]
        log.warn(
            "rejected a message on listener {listener}: {code} {reason}",
            listener=self.listener.name,
            code=code,
            reason=reason,
        )
        return outcome

    def _ack(
        self, recipient: Recipient, code: str, delimiters: Delimiters, errors: Sequence[AckError]
    ) -> str:
        return build_ack(
            recipient,
            code,
            sender=self.sender,
            control_id=self.control_ids(),
            timestamp=self.clock(),
            delimiters=delimiters,
            errors=errors,
        )

    def _store(self, outcomes: Sequence[_Outcome], *, source_file=None) -> defer.Deferred:
        """Store every row of the frame in one unit; fires with None on commit, or the StoreError."""
        rows = [row for o in outcomes for row in o.rows]
        d = self.store.add(rows, source_file=source_file) if source_file is not None else self.store.add(rows)
        d.addCallbacks(
            lambda ids: self._stored(outcomes, ids), lambda failure: self._store_failed(failure, outcomes)
        )
        return d

    def _stored(self, outcomes: Sequence[_Outcome], ids: list[int]) -> None:
        received: dict[str, list[tuple[Receipt, int]]] = {}
        for outcome, message_id in zip(outcomes, ids):  # one row per outcome
            outcome.message_id = message_id
            event = (
                "rejected"
                if outcome.errors
                else "duplicate"
                if outcome.duplicate_of is not None
                else "accepted"
            )
            self._observe(event, {"listener": self.listener.name, "code": outcome.code, "count": 1})
            if outcome.receipt is not None:
                received.setdefault(outcome.receipt.channel.name, []).append((outcome.receipt, message_id))
        for name, stored in received.items():  # once per channel: one wake for the frame
            # The channel running under that name now: a reload may have replaced the one that
            # made the receipts while the messages were on their way to the store.
            self.running.get(name, stored[0][0].channel).stored(stored)
        return None

    def _check_duplicate(self, outcome: _Outcome, received_at: datetime) -> defer.Deferred:
        """Look for the same sender + control id within the channel's window.

        A hit is stored FILTERED and answered with the original ACK.
        """
        since = received_at - timedelta(seconds=outcome.channel.duplicate_window_seconds)
        d = self.store.find_duplicate(outcome.sender[0], outcome.sender[1], outcome.control_id, since=since)

        def found(original) -> None:
            if original is None:
                return
            original_id, original_ack = original
            if outcome.receipt is not None:  # stored FILTERED: nothing for the channel to process
                outcome.receipt.channel.dropped(outcome.receipt)
                outcome.receipt = None
            outcome.duplicate_of = original_ack or encode(outcome.ack, "utf-8")
            row = outcome.rows[0]
            outcome.rows = [
                replace(
                    row,
                    status=Status.FILTERED,
                    error=f"duplicate of message {original_id} (same sender and control id"
                    f" within {outcome.channel.duplicate_window_seconds:g}s)",
                    ack=original_ack,
                    ack_code=row.ack_code or outcome.code,
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

    def _store_failed(self, failure: Failure, outcomes: Sequence[_Outcome] = ()) -> StoreError:
        _not_stored(outcomes)
        error = failure.value if failure.check(StoreError) else StoreError(failure.getErrorMessage())
        log.error(
            "message store failed on listener {listener}: {error}",
            listener=self.listener.name,
            error=str(error),
        )
        self._observe("store_failed", {"listener": self.listener.name})
        return error

    def _answer(self, outcome: _Outcome, stored: object) -> str | None:
        """The ACK text for one outcome once its storing finished (``stored`` is None or a StoreError)."""
        if not outcome.code:
            return None
        if isinstance(stored, StoreError) and outcome.code[1] == "A":
            code = "CE" if outcome.enhanced else "AR"
            error = AckError(
                206 if stored.locked else 207, "the message could not be stored now; resend it later"
            )
            text = self._ack(outcome.recipient, code, outcome.delimiters, (error,))
        else:
            code, text = outcome.code, outcome.ack
        if self.listener.honour_accept_ack_type and outcome.enhanced:
            wanted = outcome.accept_ack_type or "AL"
            positive = code == "CA"
            if wanted == "NE" or (wanted == "ER" and positive) or (wanted == "SU" and not positive):
                return None
        return text

    def _single_reply(self, stored: StoreError | None, outcome: _Outcome, decoded: Decoded) -> bytes | None:
        text = self._answer(outcome, stored)
        return None if text is None else encode(text, decoded.codec)

    def _respond(self, stored: StoreError | None, outcome: _Outcome, decoded: Decoded):
        """The reply once stored.

        At once (after_store), or once the destinations settled (after_processing).
        """
        if outcome.duplicate_of is not None and stored is None:
            return outcome.duplicate_of
        if (
            stored is not None
            or not outcome.accepted
            or outcome.channel.respond != "after_processing"
            or outcome.receipt is None
        ):
            return self._single_reply(stored, outcome, decoded)
        channel = self.running.get(outcome.channel.name, outcome.receipt.channel)  # a reload may replace it
        waiter = channel.wait_for(outcome.message_id, outcome.channel.respond_timeout_seconds)
        waiter.addCallback(self._processed, outcome, decoded)
        waiter.addErrback(self._processing_timed_out, outcome, decoded)
        return waiter

    def _processed(self, settled, outcome: _Outcome, decoded: Decoded) -> bytes | None:
        """Answer with what the destinations made of the message (after_processing)."""
        status, reason, results = settled
        if status == Status.ERROR:
            downstream = {r.response_code for r in results}
            # A transform error or a downstream AE says the content is at fault (AE); anything else is AR.
            code = "AE" if "AE" in downstream or not results else "AR"
            if outcome.enhanced:
                code = ENHANCED[code]
            outcome.code = code
            outcome.ack = self._ack(
                outcome.recipient, code, outcome.delimiters, (AckError(207, reason or "processing failed"),)
            )
        return self._single_reply(None, outcome, decoded)

    def _processing_timed_out(self, failure: Failure, outcome: _Outcome, decoded: Decoded) -> bytes | None:
        failure.trap(defer.TimeoutError)
        # Stored and queued: the positive answer is honest, the destinations catch up on their own.
        return self._single_reply(None, outcome, decoded)

    # -- batches -------------------------------------------------------------------------------

    def _batch_reply(self, batch: Batch, outcomes: Sequence[_Outcome], stored: object) -> str:
        """One frame answering a batch: one ACK per message in the batch's envelope."""
        delimiters = batch.delimiters or (outcomes[0].delimiters if outcomes else Delimiters.DEFAULT)
        acks = [a for a in (self._answer(o, stored) for o in outcomes) if a is not None]
        return batch_reply(
            batch,
            acks,
            sender=self.sender,
            timestamp=self.clock(),
            control_id=self.control_ids(),
            delimiters=delimiters,
        )


def _not_stored(outcomes: Sequence[_Outcome]) -> None:
    """Tell the channels the messages were offered to that they were not stored."""
    for outcome in outcomes:
        if outcome.receipt is not None:
            outcome.receipt.channel.dropped(outcome.receipt)


def header_columns(header: Header) -> dict:
    """The store columns read from MSH."""
    return dict(
        sending_application=header.sending_application,
        sending_facility=header.sending_facility,
        receiving_application=header.receiving_application,
        receiving_facility=header.receiving_facility,
        message_code=header.message_code,
        trigger_event=header.trigger_event,
        message_structure=header.message_structure,
        control_id=header.control_id,
        version=header.version,
        processing_id=header.processing_id,
    )
