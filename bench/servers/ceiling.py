"""The ceiling: a bare asyncio MLLP framer that answers every frame with a fixed ACK, parsing nothing.

Only MSH-10 is copied into the ACK (found by counting field separators in the first segment),
so the load generator can check MSA-2 here as everywhere else. Whatever this reaches is what
the socket path of this machine allows a Python server with this load generator.
Run: ``python bench/servers/ceiling.py --port N``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

VT, FS_CR = b"\x0b", b"\x1c\x0d"
MAX_FRAME_BYTES = 4 * 1024 * 1024
ACK_HEAD = b"\x0bMSH|^~\\&|CEILING|BENCH|||20260101000000||ACK|1|P|2.5.1\rMSA|AA|"
ACK_TAIL = b"\r\x1c\x0d"


class FixedAck(asyncio.Protocol):
    """Frames by VT ... FS CR, answers each frame at once; a buffer over the limit closes the connection."""

    ack_head = ACK_HEAD

    def answer(self, control_id: bytes) -> None:
        """Write the ACK of one frame, MSA-2 its control id (a subclass records it, or holds it back)."""
        self.transport.write(self.ack_head + control_id + ACK_TAIL)

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        while (end := buffer.find(FS_CR)) >= 0:
            start = buffer.find(VT, 0, end)
            frame, buffer = buffer[start + 1 : end], buffer[end + 2 :]
            header = frame[: frame.find(b"\r")]
            fields = header.split(header[3:4], 10) if len(header) > 3 else []
            control_id = fields[9] if len(fields) > 9 else b""
            self.answer(control_id)
        if len(buffer) > MAX_FRAME_BYTES:
            self.transport.close()
        self.buffer = buffer


async def serve(port: int, protocol: type[asyncio.Protocol] = FixedAck) -> None:
    """Answer on 127.0.0.1:port until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    loop.add_signal_handler(signal.SIGINT, stop.set_result, None)
    server = await loop.create_server(protocol, "127.0.0.1", port)
    async with server:
        await stop


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))
