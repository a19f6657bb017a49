"""An MLLP partner on a plain socket, in threads: it records what it receives from an engine process."""

from __future__ import annotations

import socket
import threading

from engine.hl7.mllp import FrameQueue, frame
from engine.listeners.client import control_id_of
from tests.fakes.outbound import ack


class RecordingPartner:
    """An MLLP partner on 127.0.0.1: answers AA at once, after noting the message's control id."""

    def __init__(self):
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._lock = threading.Lock()
        self._received: list[str] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def received(self) -> list[str]:
        """The control ids received so far, in order of arrival."""
        with self._lock:
            return list(self._received)

    def count(self) -> int:
        with self._lock:
            return len(self._received)

    def close(self) -> None:
        self._server.close()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._server.accept()
            except OSError:  # closed
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        frames = FrameQueue(1 << 20)
        with connection:
            while True:
                try:
                    data = connection.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                frames.dataReceived(data)
                while frames.frames:
                    control_id = control_id_of(frames.frames.popleft())
                    with self._lock:
                        self._received.append(control_id)
                    try:
                        connection.sendall(frame(ack("AA", control_id)))
                    except OSError:
                        return
