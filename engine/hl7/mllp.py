"""MLLP, HL7's framing of messages on a byte stream (``VT payload FS CR``): bytes only, no sockets.

The collector is modelled on Twisted's ``LineReceiver`` and ``IntNStringReceiver``: it buffers
bytes, calls one hook per whole frame, enforces a maximum frame size with an overridable hook,
counts the bytes found outside frames, and never interprets a payload. The listener's server
protocol, the command line client and the MLLP destination all collect frames with it, so every
end agrees on what a frame is. It lives with the format rather than with the listeners because
channels (the MLLP destination) may not import listeners.
"""

from __future__ import annotations

from collections import deque

__all__ = ["END_BLOCK", "START_BLOCK", "FrameCollector", "FrameQueue", "frame"]

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"


def frame(payload: bytes) -> bytes:
    """Wrap one payload in an MLLP block."""
    return START_BLOCK + payload + END_BLOCK


class FrameCollector:
    """Reassembles ``VT payload FS CR`` blocks from any chunking of a byte stream.

    ``frameStarted`` is called at a block's start byte (a listener times the frame from there).
    Bytes outside a block are dropped and counted in ``discarded_bytes``. Only FS CR ends a
    block: a VT or a lone FS inside it is content (real senders leave stray VTs in messages).
    A block that grows past ``max_frame_bytes`` is handed to ``frameTooLong`` and the buffer is
    cleared, so it never grows without bound; from then on ``overflowed`` is True and every byte is
    dropped, since the stream can no longer be trusted (its owner closes it).
    """

    max_frame_bytes = 4 * 1024 * 1024

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._in_block = False
        self._scanned = 0
        self.discarded_bytes = 0
        self.overflowed = False

    def dataReceived(self, data: bytes) -> None:
        """Take the next bytes of the stream; calls ``frameReceived`` for each block they complete."""
        if self.overflowed:
            self.discarded_bytes += len(data)
            return
        buffer = self._buffer
        buffer += data
        while buffer:
            if not self._in_block:
                start = buffer.find(START_BLOCK)
                if start < 0:
                    self.discarded_bytes += len(buffer)
                    buffer.clear()
                    return
                self.discarded_bytes += start
                del buffer[: start + 1]
                self._in_block = True
                self._scanned = 0
                self.frameStarted()
            end = buffer.find(END_BLOCK, max(self._scanned - 1, 0))
            if end < 0:
                self._scanned = len(buffer)
                if len(buffer) > self.max_frame_bytes:
                    head = bytes(buffer[:4096])
                    self.discarded_bytes += len(buffer)
                    buffer.clear()
                    self._in_block = False
                    self.overflowed = True
                    self.frameTooLong(head)
                return
            if end > self.max_frame_bytes:
                head = bytes(buffer[:4096])
                self.discarded_bytes += end + len(END_BLOCK)
                del buffer[: end + len(END_BLOCK)]
                self._in_block = False
                self.overflowed = True
                self.frameTooLong(head)
                return
            payload = bytes(buffer[:end])
            del buffer[: end + len(END_BLOCK)]
            self._in_block = False
            self._scanned = 0
            self.frameReceived(payload)

    @property
    def in_frame(self) -> bool:
        """True between a block's start byte and its end (a frame is arriving)."""
        return self._in_block

    def frameStarted(self) -> None:
        """Called when a block's start byte arrives; by default nothing."""

    def frameReceived(self, payload: bytes) -> None:
        """Called once per complete block with its payload."""
        raise NotImplementedError

    def frameTooLong(self, head: bytes) -> None:
        """Called once when a block exceeds ``max_frame_bytes``, with its first bytes; by default nothing."""


class FrameQueue(FrameCollector):
    """The frames of a stream kept in order, for a blocking reader that waits for the next one."""

    def __init__(self, max_frame_bytes: int):
        super().__init__()
        self.max_frame_bytes = max_frame_bytes
        self.frames: deque[bytes] = deque()

    def frameReceived(self, payload: bytes) -> None:
        self.frames.append(payload)
