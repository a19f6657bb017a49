"""Every response of the web server: a ``Reply`` written whole by ``send`` or ``serve``.

JSON errors, the headers every response carries (``Cache-Control: no-store``: answers carry
patient data) and no write to a connection that is gone.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server

from engine.errors import StoreError

__all__ = [
    "UNAVAILABLE",
    "MAX_ID",
    "JsonResource",
    "Reply",
    "ReplyResource",
    "error_reply",
    "json_reply",
    "parse_id",
    "send",
    "serve",
]

log = Logger(namespace="engine.web")

# Headers of every response: no sniffing, no framing, no referrer leaking URLs, no caching.
_COMMON_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
)


@dataclass(frozen=True, slots=True)
class Reply:
    """A whole HTTP response: status, body, content type and any further headers."""

    code: int
    body: bytes
    content_type: bytes = b"application/json; charset=utf-8"
    headers: tuple[tuple[bytes, bytes], ...] = ()


def json_reply(payload: Any, code: int = 200, *, headers: tuple[tuple[bytes, bytes], ...] = ()) -> Reply:
    """A JSON response."""
    return Reply(
        code, json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8"), headers=headers
    )


def error_reply(code: int, message: str, *, headers: tuple[tuple[bytes, bytes], ...] = ()) -> Reply:
    """A JSON error ``{"error": message}``."""
    return json_reply({"error": message}, code, headers=headers)


# Ids are 64-bit on PostgreSQL (and SQLite): a larger number names nothing, and must not reach the database.
MAX_ID = 2**63 - 1
_DIGITS = re.compile(rb"[0-9]{1,19}")


def parse_id(text: bytes) -> int | None:
    """A row id from a path segment: ASCII digits for 1..2**63-1, else None (the caller answers 404)."""
    if not _DIGITS.fullmatch(text):
        return None
    value = int(text)
    return value if 1 <= value <= MAX_ID else None


UNAVAILABLE = error_reply(503, "the message store is not available now; try again later")


def _prepare(request, reply: Reply) -> None:
    request.setResponseCode(reply.code)
    request.setHeader(b"content-type", reply.content_type)
    for name, value in _COMMON_HEADERS + reply.headers:
        request.setHeader(name, value)
    request.setHeader(b"content-length", b"%d" % len(reply.body))


def send(request, reply: Reply) -> bytes:
    """Set the status and headers of ``reply`` and return its body, for a synchronous ``render_*``."""
    _prepare(request, reply)
    return reply.body


def serve(request, work: defer.Deferred) -> int:
    """Answer once ``work`` fires with a Reply; returns NOT_DONE_YET.

    A StoreError becomes 503, anything else 500 (logged with its traceback).
    """
    gone: list[Failure] = []
    request.notifyFinish().addErrback(gone.append)

    def failed(failure: Failure) -> Reply:
        if failure.check(StoreError):
            log.warn(
                "web: {method} {path} failed: {error}",
                method=request.method.decode(),
                path=request.path.decode("utf-8", "replace"),
                error=failure.getErrorMessage(),
            )
            return UNAVAILABLE
        log.failure(
            "web: {method} {path} failed",
            failure,
            method=request.method.decode(),
            path=request.path.decode("utf-8", "replace"),
        )
        return error_reply(500, "internal error")

    def answer(reply: Reply) -> None:
        if gone:
            return
        _prepare(request, reply)
        request.write(reply.body)
        request.finish()

    work.addErrback(failed).addCallback(answer)
    return server.NOT_DONE_YET


class JsonResource(resource.Resource):
    """A resource whose wrong-method answer is a JSON 405 too (twisted.web's is an HTML page)."""

    def render(self, request):
        try:
            return super().render(request)
        except server.UnsupportedMethod as unsupported:
            allowed = b", ".join(unsupported.allowedMethods)
            return send(
                request, error_reply(405, f"use {allowed.decode('ascii')}", headers=((b"allow", allowed),))
            )


class ReplyResource(resource.Resource):
    """Answers every request below it with the same Reply (errors, refusals)."""

    isLeaf = True

    def __init__(self, reply: Reply):
        super().__init__()
        self.reply = reply

    def render(self, request) -> bytes:
        return send(request, self.reply)
