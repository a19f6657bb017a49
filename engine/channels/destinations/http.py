"""The HTTP destination: POST each message the HL7-over-HTTP way and read the ACK in the reply.

HAPI's HL7 over HTTP (docs/hl7.md §9): the body is the message with ``Content-Type`` naming the
HL7 media type and charset, and a ``Date`` header. Every HL7 reply, negative ones included,
comes back 2xx with the ACK as body; a non-2xx status means the message was not understood
(4xx: resending it unchanged fails again) or not processed (5xx, 408, 429: try later).
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool

from engine.channels.destinations.base import Destination
from engine.channels.destinations.encoding import encode_payload, reply_as_er7
from engine.channels.destinations.httpclient import (
    RETRYABLE_STATUSES,
    HttpClient,
    ReplyTooLong,
    RequestFailed,
    request_headers,
)
from engine.channels.destinations.policy import decide, unexpected_failure
from engine.channels.destinations.spec import HttpDestinationSettings
from engine.errors import HL7Error, TransformError
from engine.model import Delivery, DeliveryResult, Outcome

__all__ = ["HTTPDestination"]


class HTTPDestination(Destination):
    """POSTs each delivery to ``settings.url`` over a persistent connection pool; the ACK decides."""

    def __init__(self, name: str, settings: HttpDestinationSettings, *, reactor):
        super().__init__(name)
        self.settings = settings
        self._reactor = reactor
        self._client = HttpClient(
            reactor, timeout_seconds=settings.timeout_seconds, max_reply_bytes=settings.max_reply_bytes
        )
        self._headers = request_headers(
            settings.headers,
            settings.basic_auth,
            {"Content-Type": f"{settings.media_type}; charset={settings.charset}"},
        )

    def stop(self) -> defer.Deferred:
        """Close the pooled connections; fires when they are closed."""
        return self._client.stop()

    def send(self, delivery: Delivery) -> defer.Deferred:
        """POST the payload; fires with a DeliveryResult (never errbacks)."""
        return self._post(delivery).addErrback(unexpected_failure, self.name)

    @defer.inlineCallbacks
    def _post(self, delivery: Delivery):
        settings = self.settings
        content = delivery.payload
        if settings.encoding != "er7":  # encoded in the thread pool, not on the reactor
            reactor = self._reactor
            try:
                content = yield deferToThreadPool(
                    reactor, reactor.getThreadPool(), encode_payload, content, settings, settings.charset
                )
            except (HL7Error, TransformError) as exc:
                return DeliveryResult(Outcome.ERROR, reason=f"cannot encode the message: {exc}")
        try:
            reply = yield self._client.post(settings.url, self._headers, content)
        except ReplyTooLong:
            result = decide(settings.ack_policy, None, sent_control_id=delivery.control_id)
            return DeliveryResult(
                result.outcome, reason=f"the response was longer than {settings.max_reply_bytes} bytes"
            )
        except RequestFailed as exc:
            return DeliveryResult(Outcome.RETRY, reason=str(exc))
        status = reply.status
        if 200 <= status < 300:
            return decide(settings.ack_policy, reply_as_er7(reply.body), sent_control_id=delivery.control_id)
        outcome = Outcome.RETRY if status >= 500 or status in RETRYABLE_STATUSES else Outcome.ERROR
        reason = f"HTTP {status} {reply.phrase}"
        return DeliveryResult(outcome, response=reply.body or None, response_code=str(status), reason=reason)
