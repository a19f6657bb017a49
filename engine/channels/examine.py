"""What a frame holds, decided without side effects: per message, the rows to store and the answer to give.

The intake (``engine.channels.intake``) stores and answers; this module only reads. It reads
only the MSH of each message (the hot path never parses a whole message), validates it, splits
batches and picks the channel of the listener that accepts the message. A channel with
``validate`` on has the whole message checked against its structure (``engine.hl7.validate``):
the intake then reads every frame of that listener on a thread. Nothing here touches
the store, a channel's state or the log, so a large frame is read on a thread
(``Examiner.frame``) while the reactor serves other connections; a small one on the reactor,
where its channel may process it at once (``Examiner.message`` with ``receive``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import TYPE_CHECKING

from engine.channels.replies import salvage
from engine.errors import HL7Error
from engine.hl7.ack import AckError, Recipient, Sender, build_ack, is_enhanced
from engine.hl7.batch import Batch, looks_like_batch, split_batch
from engine.hl7.charset import Decoded, decode, encode_lenient
from engine.hl7.header import Header, is_ack, patient_id, read_header, validate_header
from engine.hl7.message import Delimiters
from engine.hl7.validate import validate
from engine.model import NewMessage, Status

if TYPE_CHECKING:
    from engine.channels.channel import Receipt
    from engine.channels.spec import ChannelConfig
    from engine.config import ListenerConfig

__all__ = ["HEADER_COLUMNS", "Examiner", "Verdict", "header_columns", "header_values", "namespace_id"]

# Routing choices remembered per listener, per (type, sender); past this many the memory starts again.
_MAX_ROUTES = 4096

#: Offers a message to its running channel before it is stored: (channel, text, codec, control id).
Receive = Callable[[str, str, str, str], "Receipt | None"]


def _stored_status(channel: ChannelConfig | None) -> Status:
    """A store-only channel has nothing left to do: its message is final as stored (as if processed)."""
    return Status.TRANSFORMED if channel is not None and channel.stores_only else Status.RECEIVED


def namespace_id(hd: str, delimiters: Delimiters) -> str:
    """The first component of an HD field (MSH-3/4): what routing compares senders by."""
    return hd.split(delimiters.component, 1)[0]


@dataclass
class Verdict:
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
    held_for: str | None = None  # stored RECEIVED for this channel, not offered to it yet (read on a thread)

    @property
    def accepted(self) -> bool:
        """Stored for processing (not rejected, not an ACK, not a duplicate)."""
        return self.channel is not None and bool(self.code) and not self.errors and self.duplicate_of is None


class Examiner:
    """Reads the frames of one listener into Verdicts: routing, header checks, rows and ACK texts."""

    def __init__(
        self,
        listener: ListenerConfig,
        channels: Sequence[ChannelConfig],
        *,
        sender: Sender,
        default_charset: str,
        clock: Callable[[], datetime],
        control_ids: Callable[[], str],
    ):
        self.listener = listener
        self.channels = channels
        self.sender = sender
        self.default_charset = default_charset
        self.processing_ids = frozenset(listener.processing_ids) if listener.processing_ids else None
        self.clock = clock
        self.control_ids = control_ids

    @property
    def channels(self) -> tuple[ChannelConfig, ...]:
        """The listener's channels, in file order (a reload replaces them)."""
        return self._channels

    @channels.setter
    def channels(self, channels: Sequence[ChannelConfig]) -> None:
        self._channels = tuple(channels)
        self._routes: dict[tuple[str, str, str, str], ChannelConfig | None] = {}

    def frame(
        self,
        payload: bytes,
        peer: str,
        received_at: datetime,
        channels: tuple[ChannelConfig, ...],
        decoded: Decoded | None = None,
    ) -> tuple[Decoded, list[Verdict], Batch | None]:
        """A whole frame or file read off the reactor: (decoded, one Verdict per message, the batch or None).

        Safe on any thread: routing uses ``channels`` (taken on the reactor) and a memory of its
        own, and no message is offered to its channel (``held_for`` names the channel to tell).
        """
        if decoded is None:
            decoded = decode(payload, self.default_charset)
        routes: dict = {}
        if not looks_like_batch(decoded.text):
            verdict = self.message(
                decoded.text, payload, decoded, peer, received_at, routing=(channels, routes)
            )
            return decoded, [verdict], None
        try:
            batch = split_batch(decoded.text)
        except HL7Error as exc:
            recipient, delimiters = salvage(decoded.text)
            error = AckError(exc.code, str(exc), exc.location)
            base = self._columns(payload, received_at, peer, decoded)
            return decoded, [self.reject(base, decoded.codec, recipient, delimiters, None, (error,))], None
        verdicts = [
            self.message(
                text,
                encode_lenient(text, decoded.codec),
                decoded,
                peer,
                received_at,
                batch_id=batch.batch_control_id,
                index=i,
                routing=(channels, routes),
            )
            for i, text in enumerate(batch.messages, start=1)
        ]
        return decoded, verdicts, batch

    def message(
        self,
        text: str,
        raw: bytes,
        decoded: Decoded,
        peer: str,
        received_at: datetime,
        *,
        batch_id: str | None = None,
        index: int | None = None,
        receive: Receive | None = None,
        routing: tuple[tuple[ChannelConfig, ...], dict] | None = None,
    ) -> Verdict:
        """Decide what to do with one message: rows to store and the code to answer with.

        With ``receive`` (on the reactor) an accepted message is offered to its channel now, which
        may process it before it is stored; without, it is held for its channel (``held_for``).
        ``routing``: the channels and route memory to use (off the reactor), else the listener's.
        """
        base = self._columns(raw, received_at, peer, decoded, batch_control_id=batch_id, batch_index=index)
        try:
            header = read_header(text)
        except HL7Error as exc:
            recipient, delimiters = salvage(text)
            error = AckError(exc.code, str(exc), exc.location)
            return self.reject(base, decoded.codec, recipient, delimiters, None, (error,))

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
        channels, routes = routing if routing is not None else (self._channels, self._routes)
        if is_ack(header):
            channel = self._channel_for(header, sender, channels, routes)
            return self._acknowledgement(header, recipient, problems, channel, base)
        if problems:
            fields = {**base, **header_columns(header)}
            return self.reject(fields, decoded.codec, recipient, header.delimiters, header, tuple(problems))

        channel = self._channel_for(header, sender, channels, routes)
        if channel is None:
            error = AckError(
                200,
                f"no channel on listener {self.listener.name!r} accepts"
                f" {header.message_type!r} from {sender[0]!r}",
                ("MSH", 1, 9),
            )
            return self.reject(
                {**base, **header_columns(header)},
                decoded.codec,
                recipient,
                header.delimiters,
                header,
                (error,),
            )

        findings = ()
        if channel.validation != "off":  # only ever off the reactor: the intake reads such frames on a thread
            report = validate(text)
            findings = tuple(_finding_line(f) for f in report.findings)
            if report.failed and channel.validation == "strict":
                fields = {**base, **header_columns(header), "channel": channel.name, "findings": findings}
                # Errors first: before 2.5 MSA-3 carries the first one's text.
                ordered = sorted(report.findings, key=lambda f: f.severity != "E")
                errors = tuple(f.ack_error() for f in ordered)
                return self.reject(
                    fields, decoded.codec, recipient, header.delimiters, header, errors, content=True
                )

        enhanced = is_enhanced(header)
        code = "CA" if enhanced else "AA"
        ack = self.ack(recipient, code, header.delimiters, ())
        # After processing, the answer depends on the destinations: it is stored once known.
        ack_bytes = (
            None
            if channel.respond == "after_processing" and index is None
            else encode_lenient(ack, decoded.codec)
        )
        status = _stored_status(channel)
        receipt = held_for = None
        if status == Status.RECEIVED:
            if receive is not None:
                receipt = receive(channel.name, text, decoded.codec, header.control_id)
            else:
                held_for = channel.name
        processed = receipt.result if receipt is not None else None
        # By position (tests/channels/test_examine.py pins it): by keyword it cost 7 % of a message's intake.
        row = NewMessage(
            raw,
            received_at,
            self.listener.name,
            peer,
            status if processed is None else processed.status,
            channel.name,
            *header_values(header),
            decoded.charset,
            code if ack_bytes else "",
            ack_bytes,
            "" if processed is None else processed.reason,
            batch_id,
            index,
            base["patient_id"],
            None if processed is None else processed.transformed,
            None if processed is None else processed.deliveries,
            findings,
        )
        return Verdict(
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
            held_for=held_for,
        )

    def _columns(self, raw: bytes, received_at: datetime, peer: str, decoded: Decoded, **more) -> dict:
        """The columns of a stored message that do not come from its header."""
        return dict(
            raw=raw,
            received_at=received_at,
            listener=self.listener.name,
            peer=peer,
            charset=decoded.charset,
            **more,
        )

    @staticmethod
    def _acknowledgement(
        header: Header,
        recipient: Recipient,
        problems: list[AckError],
        channel: ChannelConfig | None,
        base: dict,
    ) -> Verdict:
        """An acknowledgement: stored, never answered (that would loop between engines).

        Not even when its header is faulty: the reason is kept with it instead. Never processed at
        intake: its channel takes it in turn, by a pass.
        """
        reason = "; ".join(f"{p.code} {p.text}" for p in problems)
        status = Status.REJECTED if problems else _stored_status(channel)
        row = NewMessage(
            **base,
            **header_columns(header),
            channel=channel.name if channel else None,
            status=status,
            error=reason,
        )
        return Verdict(
            [row],
            recipient,
            header.delimiters,
            code="",
            control_id=header.control_id,
            held_for=channel.name if channel is not None and status == Status.RECEIVED else None,
        )

    def _channel_for(
        self,
        header: Header,
        sender: tuple[str, str],
        channels: tuple[ChannelConfig, ...],
        routes: dict,
    ) -> ChannelConfig | None:
        """The first channel of the listener, in file order, that accepts the message, like a rule list.

        Senders are compared by (MSH-3.1, MSH-4.1). The choice depends on nothing else, so it is
        remembered per (type, sender): a feed has few.
        """
        key = (header.message_code, header.trigger_event, *sender)
        try:
            return routes[key]
        except KeyError:
            pass
        message_type = "^".join(filter(None, (header.message_code, header.trigger_event)))
        chosen = next((channel for channel in channels if channel.accepts(message_type, *sender)), None)
        if len(routes) >= _MAX_ROUTES:  # bounded: a sender inventing ids must not grow memory
            routes.clear()
        routes[key] = chosen
        return chosen

    def reject(
        self,
        base: dict,
        codec: str,
        recipient: Recipient,
        delimiters: Delimiters,
        header: Header | None,
        errors: tuple[AckError, ...],
        *,
        content: bool = False,
    ) -> Verdict:
        """A message refused at intake: stored with its reason and answered with ERR for each error.

        A bad header (type, event, processing id, version, unreadable MSH) is AR (CR) in the
        standard's terms, stored REJECTED. With ``content`` (it failed strict validation) the
        content is at fault: AE (CE), stored ERROR for its channel, never processed.
        """
        enhanced = header is not None and is_enhanced(header)
        if content:
            code, status = ("CE" if enhanced else "AE"), Status.ERROR
        else:
            code, status = ("CR" if enhanced else "AR"), Status.REJECTED
        verdict = Verdict(
            [],
            recipient,
            delimiters,
            code=code,
            errors=errors,
            enhanced=enhanced,
            accept_ack_type=header.accept_ack_type if header else "",
            control_id=recipient.control_id,
        )
        verdict.ack = self.ack(recipient, code, delimiters, errors)
        reason = "; ".join(f"{e.code} {e.text}" for e in errors)
        verdict.rows = [
            NewMessage(
                **base,
                status=status,
                ack_code=code,
                ack=encode_lenient(verdict.ack, codec),
                error=reason,
            )
        ]
        return verdict

    def ack(self, recipient: Recipient, code: str, delimiters: Delimiters, errors: Sequence[AckError]) -> str:
        """The ACK text answering ``recipient`` with ``code`` (and ERR for each error), from us, now."""
        return build_ack(
            recipient,
            code,
            sender=self.sender,
            control_id=self.control_ids(),
            timestamp=self.clock(),
            delimiters=delimiters,
            errors=errors,
        )


def _finding_line(finding) -> str:
    """A validation finding as kept with its message (an event): severity, code, location, rule."""
    return f"validation {finding.severity} {finding.code} {finding.location}: {finding.text}"


_ROW_FIELDS = [f.name for f in fields(NewMessage)]
#: The store columns read from MSH, the row's fields between ``channel`` and ``charset``, in its order;
#: ``Header`` has an attribute of each name.
HEADER_COLUMNS = tuple(_ROW_FIELDS[_ROW_FIELDS.index("channel") + 1 : _ROW_FIELDS.index("charset")])


def header_values(header: Header) -> tuple[str, ...]:
    """The values of ``HEADER_COLUMNS``, as a row built by position takes them (attrgetter costs more)."""
    return (
        header.sending_application,
        header.sending_facility,
        header.receiving_application,
        header.receiving_facility,
        header.message_code,
        header.trigger_event,
        header.message_structure,
        header.control_id,
        header.version,
        header.processing_id,
    )


def header_columns(header: Header) -> dict:
    """The store columns read from MSH, by name."""
    return dict(zip(HEADER_COLUMNS, header_values(header), strict=True))
