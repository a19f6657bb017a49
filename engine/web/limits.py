"""Request size limits, enforced while the request arrives, before anything is buffered or parsed.

twisted.web reads a whole request body (into memory below 100 kB, a temporary file above) before
any resource sees it, and parses a form body into memory in one piece, whoever sent it. The
channel here refuses instead:

- a ``Content-Length`` over ``max_body_bytes``: 413 as soon as the headers are in, no byte of the
  body read;
- a chunked body that grows over ``max_body_bytes``: 413 at the chunk that crosses it;
- a request line and headers over ``max_header_bytes`` together: 431.

Each refusal is written straight to the connection, which is then closed: the client may not
read the answer if it keeps sending, but the server holds nothing more of the request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.logger import Logger
from twisted.web import http, server

from engine.web.auth import address_text

__all__ = ["LimitedSite"]

log = Logger(namespace="engine.web")

_REASONS = {413: b"Content Too Large", 431: b"Request Header Fields Too Large"}


class _LimitedRequest(server.Request):
    """A Request whose body stops at the channel's ``max_body_bytes``."""

    def handleContentChunk(self, data: bytes) -> None:
        if self.channel.refused:
            return
        if self.content.tell() + len(data) > self.channel.site.max_body_bytes:
            self.channel.refuse(413, "body")
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if not self.channel.refused:
            super().requestReceived(command, path, version)


class _LimitedChannel(http.HTTPChannel):
    """An HTTPChannel that refuses oversized headers (431) and bodies (413) while they arrive."""

    refused = False

    def connectionMade(self) -> None:
        # A single line longer than all the headers may be must reach lineReceived to be refused.
        self.MAX_LENGTH = self.totalHeadersSize = self.site.max_header_bytes
        self._header_bytes = 0
        super().connectionMade()

    def lineReceived(self, line: bytes) -> None:
        if self.refused:
            return
        self._header_bytes += len(line) + 2
        if self._header_bytes > self.site.max_header_bytes:
            self.refuse(431, "headers")
            return
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        self.refuse(431, "headers")

    def allHeadersReceived(self) -> None:
        self._header_bytes = 0
        if self.length is not None and self.length > self.site.max_body_bytes:
            self.refuse(413, "body")
            return
        super().allHeadersReceived()

    def rawDataReceived(self, data: bytes) -> None:
        if not self.refused:
            super().rawDataReceived(data)

    def refuse(self, code: int, what: str) -> None:
        """Answer ``code`` at once and close the connection; nothing more of this request is read."""
        if self.refused:
            return
        self.refused = True
        limit = self.site.max_body_bytes if what == "body" else self.site.max_header_bytes
        log.warn(
            "web: request from {remote} refused with {code}: its {what} exceed {limit} bytes",
            remote=address_text(self.transport.getPeer()),
            code=code,
            what=what,
            limit=limit,
        )
        self.site.observer("request_too_large", {"what": what})
        body = b'{"error":"request %s over %d bytes"}' % (what.encode("ascii"), limit)
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (code, _REASONS[code], len(body), body)
        )
        self.transport.loseConnection()


class LimitedSite(server.Site):
    """A Site whose connections refuse requests over ``max_body_bytes`` or ``max_header_bytes``.

    ``observer`` hears ``("request_too_large", {"what": "body" | "headers"})`` for each refusal.
    Served over HTTP/1.1 only: the limits are the channel's, and HTTP/2 has another channel.
    """

    requestFactory = _LimitedRequest

    def __init__(
        self,
        resource,
        *,
        max_body_bytes: int,
        max_header_bytes: int,
        observer: Callable[[str, Mapping[str, Any]], None] = lambda event, fields: None,
        **kwargs,
    ):
        super().__init__(resource, **kwargs)
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self.observer = observer

    def protocol(self) -> http.HTTPChannel:
        return _LimitedChannel()
