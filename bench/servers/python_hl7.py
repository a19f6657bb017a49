"""python-hl7's asyncio MLLP server (``hl7.mllp.start_hl7_server``) answering ``msg.create_ack()``.

The handler is the one the python-hl7 documentation shows: read a message (parsed with
``hl7.parse``), write its ACK, drain. Run: ``python bench/servers/python_hl7.py --port N``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from hl7.mllp import start_hl7_server


async def answer(reader, writer) -> None:
    """Answer every message of one connection with AA until the sender goes away."""
    try:
        while not writer.is_closing():
            message = await reader.readmessage()
            writer.writemessage(message.create_ack())
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    loop.add_signal_handler(signal.SIGINT, stop.set_result, None)
    server = await start_hl7_server(answer, "127.0.0.1", port, encoding="utf-8")
    async with server:
        await stop


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))
