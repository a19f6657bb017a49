"""MLLP framing: bytes in, whole frames out, from any chunking of the stream."""

from __future__ import annotations

import pytest

from engine.hl7.mllp import END_BLOCK, START_BLOCK, FrameCollector, FrameQueue, frame

MSG_A = b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|1|P|2.5\rPID|1||123\r"
MSG_B = b"MSH|^~\\&|A|B|C|D|20260101||ORU^R01|2|P|2.5\rOBX|1|NM|x||5\r"
MSG_C = b"MSH|^~\\&|A|B|C|D|20260101||SIU^S12|3|P|2.5\r"


class RecordingFramer(FrameCollector):
    """Keeps every frame and every too-long head it is handed, and counts the frames started."""

    def __init__(self, max_frame_bytes: int = 1024):
        super().__init__()
        self.max_frame_bytes = max_frame_bytes
        self.frames: list[bytes] = []
        self.too_long: list[bytes] = []
        self.started = 0

    def frameStarted(self) -> None:
        self.started += 1

    def frameReceived(self, payload: bytes) -> None:
        self.frames.append(payload)

    def frameTooLong(self, head: bytes) -> None:
        self.too_long.append(head)


def replay(data: bytes, chunk: int, framer: FrameCollector) -> None:
    """Feed ``data`` to the collector ``chunk`` bytes at a time."""
    for start in range(0, len(data), chunk):
        framer.dataReceived(data[start : start + chunk])


STREAM = (
    b"garbage\r\n"
    + frame(MSG_A)
    + b"\r\n"  # stray line ending between frames
    + frame(MSG_B)
    + frame(MSG_C)
    + MSG_A
    + END_BLOCK  # missing VT: dropped, never half-delivered
    + frame(MSG_B + b"NTE|1||stray \x0b inside\r")  # a VT inside a frame is content
)
DISCARDED = len(b"garbage\r\n") + 2 + len(MSG_A) + len(END_BLOCK)


@pytest.mark.parametrize("chunk", range(1, len(STREAM) + 1))
def test_every_chunk_size_yields_the_same_frames(chunk):
    """Any chunking, a delimiter split across reads included, gives the same frames, discard count and
    frame starts (one per start byte outside a frame)."""
    framer = RecordingFramer()
    replay(STREAM, chunk, framer)
    assert framer.frames == [MSG_A, MSG_B, MSG_C, MSG_B + b"NTE|1||stray \x0b inside\r"]
    assert framer.discarded_bytes == DISCARDED
    assert framer.too_long == []
    assert (framer.started, framer.in_frame) == (4, False)
    framer.dataReceived(START_BLOCK + MSG_C[:5])
    assert (framer.started, framer.in_frame) == (5, True)


def test_trailing_cr_does_not_leak_into_the_next_frame():
    """The frame ends at FS CR, so the next frame starts with MSH, not with a CR."""
    framer = RecordingFramer()
    framer.dataReceived(frame(MSG_A) + frame(MSG_B))
    assert [f[:3] for f in framer.frames] == [b"MSH", b"MSH"]


def test_fs_without_cr_is_not_the_end_of_a_frame():
    """A lone FS inside the payload is data; only FS CR ends the frame."""
    framer = RecordingFramer()
    framer.dataReceived(START_BLOCK + b"MSH|a\x1cb\r" + END_BLOCK)
    assert framer.frames == [b"MSH|a\x1cb\r"]


def test_oversize_frame_is_cut_off_and_the_buffer_cleared():
    """A frame past the limit goes to frameTooLong once, and the buffer does not keep growing."""
    framer = RecordingFramer(max_frame_bytes=100)
    framer.dataReceived(START_BLOCK + b"MSH|" + b"x" * 150)
    assert len(framer.too_long) == 1 and framer.too_long[0].startswith(b"MSH|")
    framer.dataReceived(b"y" * 10_000 + END_BLOCK + frame(MSG_A))
    assert len(framer._buffer) == 0
    assert framer.frames == []  # after an oversize frame the connection is being closed; nothing more is read


def test_oversize_frame_whose_end_arrives_in_the_same_read_is_refused():
    """A complete frame larger than the limit is refused too, not delivered."""
    framer = RecordingFramer(max_frame_bytes=10)
    framer.dataReceived(frame(MSG_A))
    assert framer.frames == [] and len(framer.too_long) == 1


def test_a_frame_queue_keeps_the_frames_in_order_at_every_chunk_size():
    """What the blocking client and the MLLP destination read: whole frames, oldest first."""
    for chunk in range(1, len(STREAM) + 1):
        queue = FrameQueue(1024)
        replay(STREAM, chunk, queue)
        assert list(queue.frames) == [MSG_A, MSG_B, MSG_C, MSG_B + b"NTE|1||stray \x0b inside\r"]
        assert (queue.discarded_bytes, queue.overflowed) == (DISCARDED, False)


def test_a_frame_queue_says_a_frame_was_too_long_and_reads_nothing_more():
    """Past the limit, overflowed is set and every later byte is dropped and counted."""
    queue = FrameQueue(100)
    queue.dataReceived(frame(MSG_A) + START_BLOCK + b"x" * 150)
    assert list(queue.frames) == [MSG_A] and queue.overflowed
    queue.dataReceived(frame(MSG_B))
    assert list(queue.frames) == [MSG_A]
    assert queue.discarded_bytes == 150 + len(frame(MSG_B))
