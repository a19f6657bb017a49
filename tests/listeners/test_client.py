"""The blocking MLLP client: a reply per request over loopback, and splitting files into messages."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

import pytest

from engine.hl7.mllp import frame
from engine.listeners.client import MLLPClient, ReplyTimeout, control_id_of, split_messages

MSG = b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|C1|P|2.5\rPID|1||123\r"


def serve_once(answer: Callable[[socket.socket, bytes], None]) -> tuple[int, threading.Thread]:
    """A loopback server for one connection: ``answer`` gets the socket and the first bytes read."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def run() -> None:
        with server:
            connection, _ = server.accept()
            with connection:
                answer(connection, connection.recv(65536))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return port, thread


def test_a_reply_arriving_in_pieces_is_one_payload():
    """The reply's frame is collected across reads; bytes before it are not part of it."""

    sent = []

    def answer(connection: socket.socket, received: bytes) -> None:
        sent.append(received)
        reply = b"\r\n" + frame(b"MSH|^~\\&|ACK\rMSA|AA|C1\r")
        for start in range(0, len(reply), 3):
            connection.sendall(reply[start : start + 3])

    port, server = serve_once(answer)
    with MLLPClient("127.0.0.1", port, timeout=5) as client:
        assert client.request(MSG) == b"MSH|^~\\&|ACK\rMSA|AA|C1\r"
    server.join(5)
    assert sent == [frame(MSG)]


def test_no_reply_in_time_raises_reply_timeout():
    """A receiver that keeps the connection open without answering gives ReplyTimeout."""
    done = threading.Event()
    port, server = serve_once(lambda connection, received: done.wait(5))
    with MLLPClient("127.0.0.1", port, timeout=5) as client:
        with pytest.raises(ReplyTimeout):
            client.request(MSG, timeout=0.2)
    done.set()
    server.join(5)


def test_a_receiver_that_hangs_up_before_replying_is_a_connection_error():
    """The connection closing before a whole reply arrived raises ConnectionError."""
    port, server = serve_once(lambda connection, received: connection.sendall(b"\x0bMSH|half"))
    with MLLPClient("127.0.0.1", port, timeout=5) as client:
        with pytest.raises(ConnectionError):
            client.request(MSG)
    server.join(5)


@pytest.mark.parametrize("separator", [b"\r", b"\n", b"\r\n"])
def test_a_file_splits_into_messages_at_each_msh(separator):
    """CR, LF or CRLF between segments; each message re-joined with CR and ending with one."""
    data = separator.join([b"MSH|^~\\&|1", b"PID|1", b"", b"MSH|^~\\&|2", b"PID|2"]) + separator
    assert split_messages(data) == [b"MSH|^~\\&|1\rPID|1\r", b"MSH|^~\\&|2\rPID|2\r"]


def test_a_file_loses_its_bom_and_its_batch_envelope_unless_asked_to_keep_it():
    """A UTF-8 BOM is dropped; FHS/BHS/BTS/FTS are dropped, or the whole file is one payload."""
    data = b"\xef\xbb\xbfFHS|^~\\&\nBHS|^~\\&\nMSH|^~\\&|1\nBTS|1\nFTS|1\n"
    assert split_messages(data) == [b"MSH|^~\\&|1\r"]
    assert split_messages(data, keep_batch_envelope=True) == [
        b"FHS|^~\\&\rBHS|^~\\&\rMSH|^~\\&|1\rBTS|1\rFTS|1\r"
    ]
    assert split_messages(b"\n\n") == []


def test_the_control_id_is_msh_10_in_the_message_s_own_separator():
    """MSH-10 read from the first segment; '' when it is not an MSH or too short."""
    assert control_id_of(MSG) == "C1"
    assert control_id_of(b"MSH#^~\\&#A#B#C#D#2026##ADT#X9#P#2.5\r") == "X9"
    assert control_id_of(b"PID|1||123\r") == ""
    assert control_id_of(b"MSH|^~\\&|A\r") == ""
