"""The FHIR destination: each message as a transaction Bundle POSTed to a FHIR server's base URL.

The message becomes a Bundle (``engine.fhirmap``) whose entries are conditional requests, so a
message sent again creates nothing twice. The server's answer decides the delivery: 2xx with every
entry's ``response.status`` 2xx is SENT; 5xx, 408, 429, a timeout or no connection is RETRY; any
other 4xx (the Bundle was refused: resending it unchanged fails again) is ERROR. The server's
OperationOutcome is kept as the response; the reason names its issues by severity, code and
location only, as its diagnostics may quote the message. A message that cannot be converted is
ERROR at once.
"""

from __future__ import annotations

import json

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool

from engine.channels.destinations.base import Destination
from engine.channels.destinations.httpclient import (
    RETRYABLE_STATUSES,
    HttpClient,
    ReplyTooLong,
    RequestFailed,
    request_headers,
)
from engine.channels.destinations.policy import unexpected_failure
from engine.channels.destinations.spec import FhirDestinationSettings
from engine.errors import HL7Error
from engine.fhirmap.bundle import bundle_json
from engine.model import Delivery, DeliveryResult, Outcome

__all__ = ["FHIRDestination", "outcome_text"]

_MEDIA_TYPE = "application/fhir+json"
_MAX_REASON = 500


class FHIRDestination(Destination):
    """POSTs each delivery, converted to a transaction Bundle, to ``settings.url``."""

    def __init__(self, name: str, settings: FhirDestinationSettings, *, reactor):
        super().__init__(name)
        self.settings = settings
        self._reactor = reactor
        self._client = HttpClient(
            reactor, timeout_seconds=settings.timeout_seconds, max_reply_bytes=settings.max_reply_bytes
        )
        self._headers = request_headers(
            settings.headers,
            settings.basic_auth,
            {"Content-Type": f"{_MEDIA_TYPE}; charset=utf-8", "Accept": _MEDIA_TYPE},
        )

    def stop(self) -> defer.Deferred:
        """Close the pooled connections; fires when they are closed."""
        return self._client.stop()

    def send(self, delivery: Delivery) -> defer.Deferred:
        """Convert and POST the payload; fires with a DeliveryResult (never errbacks)."""
        return self._post(delivery).addErrback(unexpected_failure, self.name)

    @defer.inlineCallbacks
    def _post(self, delivery: Delivery):
        settings = self.settings
        reactor = self._reactor
        try:
            # In a pool thread: a large message takes tens of milliseconds to become a Bundle.
            body = yield deferToThreadPool(
                reactor, reactor.getThreadPool(), bundle_json, delivery.payload, zone=settings.zone
            )
        except HL7Error as exc:
            return DeliveryResult(Outcome.ERROR, reason=f"cannot convert to FHIR: {exc}")
        try:
            reply = yield self._client.post(settings.url, self._headers, body)
        except ReplyTooLong:
            # The server answered; what it said is unknown: asking again is safe (conditional requests).
            return DeliveryResult(
                Outcome.RETRY, reason=f"the response was longer than {settings.max_reply_bytes} bytes"
            )
        except RequestFailed as exc:
            return DeliveryResult(Outcome.RETRY, reason=str(exc))
        status = reply.status
        code = str(status)
        if 200 <= status < 300:
            refused = _refused_entries(reply.body)
            if refused:
                return DeliveryResult(Outcome.ERROR, response=reply.body, response_code=code, reason=refused)
            return DeliveryResult(Outcome.SENT, response=reply.body or None, response_code=code)
        outcome = Outcome.RETRY if status >= 500 or status in RETRYABLE_STATUSES else Outcome.ERROR
        text = outcome_text(reply.body)
        reason = f"HTTP {status} {reply.phrase}" + (f": {text}" if text else "")
        return DeliveryResult(outcome, response=reply.body or None, response_code=code, reason=reason)


def _refused_entries(body: bytes) -> str:
    """What a 2xx transaction-response says went wrong in its entries ('' when each entry is 2xx)."""
    try:
        bundle = json.loads(body) if body else {}
    except ValueError:
        return ""  # a 2xx to a transaction means all of it was done; the body is only a report
    entries = bundle.get("entry", []) if isinstance(bundle, dict) else []
    refused = []
    for number, entry in enumerate(entries, start=1):
        response = entry.get("response", {}) if isinstance(entry, dict) else {}
        status = str(response.get("status", "")).strip()
        if status and not status.startswith("2"):
            detail = outcome_text(json.dumps(response.get("outcome", {})).encode("utf-8"))
            refused.append(f"entry {number}: {status}" + (f" ({detail})" if detail else ""))
    return "; ".join(refused)[:_MAX_REASON]


def outcome_text(body: bytes) -> str:
    """The issues of an OperationOutcome body as one line of severity, code and location ('' if none).

    Not the diagnostics text: a server may quote the resource in it, and a reason holds no content.
    """
    try:
        outcome = json.loads(body) if body else None
    except ValueError:
        return ""
    if not isinstance(outcome, dict) or outcome.get("resourceType") != "OperationOutcome":
        return ""
    issues = []
    for issue in outcome.get("issue", []):
        if not isinstance(issue, dict):
            continue
        where = ", ".join(str(place) for place in issue.get("expression", []) or issue.get("location", []))
        issues.append(
            f"{issue.get('severity', 'error')} {issue.get('code', 'unknown')}"
            + (f" at {where}" if where else "")
        )
    return "; ".join(issues)[:_MAX_REASON]
