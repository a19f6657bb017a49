"""The file destination: each message (or each batch) becomes one file, written atomically.

The content goes to a hidden temporary file in the target folder, is flushed to disk, then gets
its final name in one step (a hard link that fails when the name is taken, or a rename that
replaces), so a program watching the folder never sees a partial file. The writing runs in the
reactor's thread pool, never on the reactor thread.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from datetime import datetime
from itertools import count, islice
from pathlib import Path

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool

from engine.channels.destinations.base import Destination
from engine.channels.destinations.encoding import encode_payload
from engine.channels.destinations.policy import unexpected_failure
from engine.channels.destinations.spec import FileSettings
from engine.channels.journal import NO_JOURNAL, Journal
from engine.errors import HL7Error, TransformError
from engine.hl7.dtm import hl7_timestamp
from engine.hl7.header import read_header
from engine.model import Delivery, DeliveryResult, Outcome

__all__ = ["FileDestination", "TEMP_PREFIX"]

#: Temporary files start with this (hidden, and never matching a final name).
TEMP_PREFIX = ".hl7engine-"
#: How many numbered names (name-1.hl7, name-2.hl7...) on_exists: unique tries.
MAX_UNIQUE = 1000

_SEGMENT_BREAK = re.compile(rb"\r\n|\n|\r")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class _NameTaken(Exception):
    """The file name is taken and on_exists is error."""


class FileDestination(Destination):
    """Writes each delivery to its own file in ``settings.directory``, or each run to one (``batch``)."""

    def __init__(self, name: str, settings: FileSettings, *, reactor):
        super().__init__(name)
        self.settings = settings
        self._reactor = reactor
        self._writing: set[defer.Deferred] = set()

    def start(self) -> None:
        """Nothing to open: the folder is created on the first write."""

    def stop(self) -> defer.Deferred:
        """Fires once the files being written are complete."""
        return defer.DeferredList(list(self._writing)).addCallback(lambda _: None)

    def send(self, delivery: Delivery) -> defer.Deferred:
        """Write one message to its own file (a one-message batch file when ``batch`` is set)."""
        return self._write([delivery]).addCallback(lambda results: results[0])

    def send_run(
        self,
        deliveries: Sequence[Delivery],
        *,
        stop_at_failure: bool,
        stopped: Callable[[], bool] | None = None,
        journal: Journal = NO_JOURNAL,
    ) -> defer.Deferred:
        """With ``batch`` set, the whole run in one file in an FHS/BHS envelope (one result each, all alike).

        Without it, one file per message, one after another (``Destination.send_run``). In a batch
        the file is what is in flight: its messages are noted in ``journal`` before it is written.
        """
        if not self.settings.batch:
            return super().send_run(
                deliveries, stop_at_failure=stop_at_failure, stopped=stopped, journal=journal
            )
        return self._write(list(deliveries), journal)

    def _write(self, deliveries: list[Delivery], journal: Journal = NO_JOURNAL) -> defer.Deferred:
        """Write every delivery into one file, noted in ``journal`` around it; fires with one result each."""
        if not deliveries:
            return defer.succeed([])
        now = datetime.fromtimestamp(self._reactor.seconds()).astimezone()
        try:
            filename = self._filename(deliveries[0], now)
        except ValueError as exc:
            return defer.succeed(
                [DeliveryResult(Outcome.ERROR, reason=f"no usable file name: {exc}")] * len(deliveries)
            )
        pool = self._reactor.getThreadPool()
        writing = deferToThreadPool(
            self._reactor,
            pool,
            _write_journalled,
            journal,
            deliveries,
            self.settings.directory,
            filename,
            lambda: self._content(deliveries, now),
            self.settings.on_exists,
        )
        writing.addErrback(unexpected_failure, self.name)
        self._writing.add(writing)

        def done(result: DeliveryResult) -> list[DeliveryResult]:
            self._writing.discard(writing)
            return [result] * len(deliveries)

        return writing.addCallback(done)

    def _filename(self, delivery: Delivery, now: datetime) -> str:
        """The file name the template gives; ValueError when it is not a plain, visible file name."""
        values = {
            "channel": delivery.channel,
            "destination": delivery.destination,
            "message_id": delivery.message_id,
            "delivery_id": delivery.delivery_id,
            # From the message itself: only characters that are safe in any file name.
            "control_id": _UNSAFE.sub("_", delivery.control_id),
            "message_type": _UNSAFE.sub("_", _message_type(delivery.payload)),
            "now": now,
        }
        try:
            name = self.settings.filename.format(**values)
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"template {self.settings.filename!r}: {exc}") from None
        if not name or name.startswith(".") or any(char in name for char in "/\\\0"):
            raise ValueError(f"template {self.settings.filename!r} gave {name!r}")
        return name

    def _content(self, deliveries: list[Delivery], now: datetime) -> bytes:
        """The file's bytes (in a pool thread): the message encoded, or the ER7 messages (in a batch)."""
        if self.settings.encoding != "er7":  # one message a file (a batch file is ER7)
            return encode_payload(deliveries[0].payload, self.settings)
        separator = self.settings.separator
        body = b"".join(separator.join(_segments(d.payload)) + separator for d in deliveries)
        if not self.settings.batch:
            return body
        field, encoding = _delimiters(deliveries[0].payload)
        stamp = hl7_timestamp(now)
        control_id = str(deliveries[0].delivery_id)
        # Fields 1-2 are the delimiters, as in MSH; FHS-7/BHS-7 the time, FHS-11/BHS-11 the control id.
        fhs = field.join(["FHS", encoding, "", "", "", "", stamp, "", "", "", control_id])
        bhs = field.join(["BHS", encoding, "", "", "", "", stamp, "", "", "", control_id])
        bts = field.join(["BTS", str(len(deliveries))])
        fts = field.join(["FTS", "1"])
        header = separator.join(s.encode("ascii") for s in (fhs, bhs)) + separator
        trailer = separator.join(s.encode("ascii") for s in (bts, fts)) + separator
        return header + body + trailer


def _segments(payload: bytes) -> list[bytes]:
    return [segment for segment in _SEGMENT_BREAK.split(payload) if segment]


def _first_line(payload: bytes) -> str:
    return _SEGMENT_BREAK.split(payload, maxsplit=1)[0].decode("utf-8", errors="replace")


def _message_type(payload: bytes) -> str:
    """MSH-9.1 and MSH-9.2 joined by '_' (ADT_A01); '' when the payload has no readable MSH."""
    try:
        header = read_header(_first_line(payload))
    except HL7Error:
        return ""
    return "_".join(part for part in (header.message_code, header.trigger_event) if part)


def _delimiters(payload: bytes) -> tuple[str, str]:
    """The field separator and encoding characters of the payload's MSH (or the standard ones)."""
    try:
        header = read_header(_first_line(payload))
    except HL7Error:
        return "|", "^~\\&"
    return header.field(1), header.field(2)


def _write_journalled(
    journal: Journal,
    deliveries: list[Delivery],
    directory: Path,
    name: str,
    content: Callable[[], bytes],
    on_exists: str,
) -> DeliveryResult:
    """``_write_file`` of what ``content()`` gives, its deliveries noted in ``journal`` before and
    answered after (in a pool thread). A message that cannot be encoded is an ERROR, not written.
    """
    try:
        data = content()
    except (HL7Error, TransformError) as exc:
        return DeliveryResult(Outcome.ERROR, reason=f"cannot encode the message: {exc}")
    for delivery in deliveries:
        refused = journal.note_sending(delivery)
        if refused is not None:
            return refused
    result = _write_file(directory, name, data, on_exists)
    for delivery in deliveries:
        journal.answered(delivery, result)
    journal.flush()
    return result


def _write_file(directory: Path, name: str, content: bytes, on_exists: str) -> DeliveryResult:
    """Write ``content`` as ``directory/name`` atomically (runs in a pool thread); the outcome."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        path = _write_atomically(directory, name, content, on_exists)
    except _NameTaken:
        return DeliveryResult(Outcome.ERROR, reason=f"{directory / name} exists (on_exists: error)")
    except OSError as exc:
        return DeliveryResult(Outcome.RETRY, reason=f"cannot write {directory / name}: {exc.strerror or exc}")
    return DeliveryResult(Outcome.SENT, reason=str(path))


def _write_atomically(directory: Path, name: str, content: bytes, on_exists: str) -> Path:
    descriptor, temp = tempfile.mkstemp(dir=directory, prefix=TEMP_PREFIX, suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        path = _give_name(Path(temp), directory, name, on_exists)
    finally:
        try:
            os.unlink(temp)  # still there after a link, or after a failure
        except FileNotFoundError:
            pass
    _sync_directory(directory)
    return path


def _give_name(temp: Path, directory: Path, name: str, on_exists: str) -> Path:
    """Give the complete temporary file its final name, as on_exists says when the name is taken."""
    if on_exists == "overwrite":
        path = directory / name
        os.replace(temp, path)
        return path
    stem, suffix = Path(name).stem, Path(name).suffix
    candidates = [name]
    if on_exists == "unique":
        candidates = (name, *(f"{stem}-{n}{suffix}" for n in islice(count(1), MAX_UNIQUE)))
    for candidate in candidates:
        path = directory / candidate
        try:
            os.link(temp, path)  # unlike rename, fails when the name is taken: no check-then-act race
        except FileExistsError:
            continue
        return path
    if on_exists == "error":
        raise _NameTaken(name)
    raise OSError(errno.EEXIST, f"{name} and {MAX_UNIQUE} numbered variants all exist")


def _sync_directory(directory: Path) -> None:
    """Flush the new directory entry to disk, so the file survives a power loss once reported SENT."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
