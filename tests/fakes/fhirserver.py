"""A small FHIR R4 server for the tests: takes transaction Bundles, validates and stores their resources.

``FhirServer`` is a twisted.web resource at a base URL. A POST to the base must be a transaction
Bundle; it is validated with the fhir.resources R4B models (a Bundle that does not validate is
answered 400 with an OperationOutcome), its conditional requests are honoured the way a FHIR
server does (``ifNoneExist`` finds an existing resource by identifier; ``PUT Type?identifier=``
updates the one it finds, or creates), ``urn:uuid:`` references are rewritten to the ids given, and
the answer is a transaction-response Bundle. ``fail_next`` scripts answers instead (500, 400 with
an OperationOutcome, 429, a 200 whose entries failed).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs

import pytest_twisted
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.web import resource, server


@dataclass
class Scripted:
    """An answer given instead of processing the Bundle."""

    status: int
    body: dict | None = None
    delay: float = 0.0


def operation_outcome(code: str, diagnostics: str, expression: str | None = None) -> dict:
    """An OperationOutcome with one error issue."""
    issue = {"severity": "error", "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = [expression]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


class FhirServer(resource.Resource):
    """The server: ``resources[type][id]`` holds what was stored, ``received`` every Bundle posted."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.resources: dict[str, dict[str, dict]] = {}
        self.received: list[dict] = []
        self.headers: list[dict[str, str]] = []
        self.script: deque[Scripted] = deque()
        self.url = ""
        self._next_id = 0
        self._pending = []

    def fail_next(self, status: int, body: dict | None = None, *, delay: float = 0.0) -> None:
        """Answer the next POST with ``status`` and ``body`` (JSON) instead of processing it."""
        self.script.append(Scripted(status, body, delay))

    def render_POST(self, request):
        self.headers.append(
            {
                name.decode().lower(): values[0].decode()
                for name, values in request.requestHeaders.getAllRawHeaders()
            }
        )
        request.setHeader(b"Content-Type", b"application/fhir+json")
        body = request.content.read()
        if self.script:
            scripted = self.script.popleft()
            request.setResponseCode(scripted.status)
            payload = json.dumps(scripted.body).encode() if scripted.body is not None else b""
            if not scripted.delay:
                return payload
            call = reactor.callLater(scripted.delay, self._finish, request, payload)
            self._pending.append(call)
            request.notifyFinish().addErrback(lambda _: call.cancel() if call.active() else None)
            return server.NOT_DONE_YET
        try:
            bundle = json.loads(body)
            Bundle.model_validate(bundle)
            for entry in bundle.get("entry", []):
                get_fhir_model_class(entry["resource"]["resourceType"]).model_validate(entry["resource"])
        except (ValueError, KeyError, ValidationError) as exc:
            request.setResponseCode(400)
            return json.dumps(operation_outcome("structure", str(exc)[:2000])).encode()
        if bundle.get("type") != "transaction":
            request.setResponseCode(400)
            return json.dumps(operation_outcome("invalid", "only transaction Bundles are taken")).encode()
        self.received.append(bundle)
        return json.dumps(self._transaction(bundle)).encode()

    def _finish(self, request, payload: bytes) -> None:
        request.write(payload)
        request.finish()

    def stop(self) -> None:
        """Cancel delayed answers still pending."""
        for call in self._pending:
            if call.active():
                call.cancel()

    # ------------------------------------------------------------------------------------ transactions

    def find(self, kind: str, token: str) -> dict | None:
        """The stored resource of ``kind`` with the identifier ``system|value`` (search-escaped)."""
        system, _, value = _split_token(token)
        for stored in self.resources.get(kind, {}).values():
            for item in stored.get("identifier", []):
                if item.get("system") == system and item.get("value") == value:
                    return stored
        return None

    def _transaction(self, bundle: dict) -> dict:
        ids: dict[str, str] = {}
        responses = []
        for entry in bundle.get("entry", []):
            resource_ = entry["resource"]
            kind = resource_["resourceType"]
            request = entry["request"]
            found = None
            if request["method"] == "PUT":
                path, _, query = request["url"].partition("?")
                assert path == kind, request
                found = self.find(kind, parse_qs(query)["identifier"][0])
            elif "ifNoneExist" in request:
                found = self.find(kind, parse_qs(request["ifNoneExist"])["identifier"][0])
                if found is not None:
                    ids[entry["fullUrl"]] = f"{kind}/{found['id']}"
                    responses.append({"response": {"status": "200 OK", "location": f"{kind}/{found['id']}"}})
                    continue
            if found is None:
                self._next_id += 1
                resource_id = str(self._next_id)
                status = "201 Created"
            else:
                resource_id = found["id"]
                status = "200 OK"
            ids[entry["fullUrl"]] = f"{kind}/{resource_id}"
            self.resources.setdefault(kind, {})[resource_id] = {**resource_, "id": resource_id}
            responses.append({"response": {"status": status, "location": f"{kind}/{resource_id}"}})
        for stored in (item for kind in self.resources.values() for item in kind.values()):
            _resolve(stored, ids)
        return {"resourceType": "Bundle", "type": "transaction-response", "entry": responses}


def _split_token(token: str) -> tuple[str, str, str]:
    """``system|value`` of a search token (already URL-decoded), its backslash escapes undone."""
    parts, current, escaped = [], "", False
    for char in token:
        if escaped:
            current += char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "|" and not parts:
            parts.append(current)
            current = ""
        else:
            current += char
    return (parts[0] if parts else "", "|", current)


def _resolve(value, ids: dict[str, str]) -> None:
    """Rewrite ``urn:uuid:`` references to the ids the transaction gave."""
    if isinstance(value, dict):
        reference = value.get("reference")
        if isinstance(reference, str) and reference in ids:
            value["reference"] = ids[reference]
        for item in value.values():
            _resolve(item, ids)
    elif isinstance(value, list):
        for item in value:
            _resolve(item, ids)


def serve_fhir() -> Iterator[FhirServer]:
    """A FhirServer on an ephemeral loopback port while the generator runs (a fixture's body)."""
    handler = FhirServer()
    endpoint = serverFromString(reactor, "tcp:0:interface=127.0.0.1")
    port = pytest_twisted.blockon(endpoint.listen(server.Site(handler)))
    handler.url = f"http://127.0.0.1:{port.getHost().port}/fhir"
    yield handler
    handler.stop()
    pytest_twisted.blockon(port.stopListening())
