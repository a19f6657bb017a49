"""The patient record over HTTP: search and show as JSON, and the FHIR R4 ``Patient/$everything`` export.

    GET /api/patients?identifier=[AUTHORITY|]VALUE&name=PREFIX&birthdate=YYYY[-MM[-DD]]&limit=N
    GET /api/patients/{id}
    GET /fhir/Patient/{id}/$everything            (application/fhir+json)

Every query runs on the store's read pool (``store.read``); nothing blocks the reactor. These
resources carry no authentication of their own: mount them behind the web server's gate
(``patient_resources`` gives the paths it expects). Patient data is never logged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from twisted.internet import defer
from twisted.web import resource

from engine.record.fhir import everything
from engine.record.person import normalise
from engine.record.query import find_patients, get_patient
from engine.record.view import MAX_RESULTS
from engine.web.apidoc import ID, json_response, operation, query
from engine.web.responses import JsonResource, Reply, error_reply, json_reply, parse_id, serve
from engine.web.roles import OPERATOR

__all__ = ["FHIR_CONTENT_TYPE", "OPENAPI_PATHS", "build_api", "patient_resources"]

FHIR_CONTENT_TYPE = b"application/fhir+json; charset=utf-8"
_CRITERIA = ("identifier", "name", "birthdate")
_SEARCH_PARAMS = (*_CRITERIA, "limit")
# A criterion of nothing but these would match every patient (or none, by accident of escaping).
_MATCHES_ANYTHING = re.compile(r"[\s%_*]*")
_BIRTHDATE = re.compile(r"\d{4}(-\d{2}(-\d{2})?)?")


# Person data: an operator's (engine.web.roles).
OPENAPI_PATHS: dict = {
    "/api/patients": {
        "get": operation(
            "Find patients by identifier, name prefix, birth date (audited: patient.search)",
            OPERATOR,
            parameters=[
                query("identifier", "[AUTHORITY|]VALUE"),
                query("name", "a name prefix"),
                query("birthdate", "YYYY, YYYY-MM or YYYY-MM-DD"),
                query("limit", f"1..{MAX_RESULTS}", kind="integer"),
            ],
        )
    },
    "/api/patients/{id}": {
        "get": operation(
            "One patient, everything the record holds (audited: patient.view)",
            OPERATOR,
            parameters=[ID],
            responses={"404": {"description": "no such patient"}},
        )
    },
    "/fhir/Patient/{id}/$everything": {
        "get": operation(
            "The patient's FHIR R4 Bundle (audited: patient.export)",
            OPERATOR,
            parameters=[ID],
            ok={"description": "a Bundle", "content": {FHIR_CONTENT_TYPE.decode().split(";")[0]: {}}},
            responses={"404": json_response("an OperationOutcome")},
        )
    },
}


def patient_resources(store, *, auditor=None) -> dict[str, resource.Resource]:
    """The resources to mount behind the gate, by path: ``api/patients`` and ``fhir``.

    With an ``auditor`` (engine.web.audit.Auditor), every patient shown or exported is recorded.
    """
    return {"api/patients": PatientsApi(store, auditor), "fhir": FhirApi(store, auditor)}


def build_api(store) -> resource.Resource:
    """A standalone tree with ``/api/patients`` and ``/fhir`` (no gate: for tests and for mounting whole)."""
    root = resource.Resource()
    api = resource.Resource()
    resources = patient_resources(store)
    api.putChild(b"patients", resources["api/patients"])
    root.putChild(b"api", api)
    root.putChild(b"fhir", resources["fhir"])
    return root


def _params(request) -> dict[str, str]:
    """The query parameters, each known and given once (values stripped); ValueError says which is not."""
    params = {}
    for raw_name, values in (request.args or {}).items():
        name = raw_name.decode("utf-8", "replace")
        if name not in _SEARCH_PARAMS:
            raise ValueError(f"unknown parameter {name!r}; known: {', '.join(_SEARCH_PARAMS)}")
        if len(values) != 1:
            raise ValueError(f"parameter {name!r} given {len(values)} times")
        params[name] = values[0].decode("utf-8", "replace").strip()
    return params


def _search_criteria(request) -> dict:
    """find_patients keyword arguments from the query; ValueError for what cannot be used.

    A criterion that would match everyone (empty, wildcards only, a name without a letter or
    digit) is refused rather than dropped: a search must never list patients it was not asked for.
    """
    params = _params(request)
    given = [name for name in _CRITERIA if name in params]
    if not given:
        raise ValueError(f"give at least one of {', '.join(_CRITERIA)}")
    for name in given:
        if _MATCHES_ANYTHING.fullmatch(params[name]):
            raise ValueError(f"{name} must be a value, not empty or wildcards (% _ * match nothing special)")
    if "name" in params and not normalise(params["name"]):
        raise ValueError("name must hold at least one letter or digit")
    criteria: dict = {"name": params.get("name"), "birthdate": params.get("birthdate")}
    if "identifier" in params:
        authority, separator, value = params["identifier"].rpartition("|")
        if _MATCHES_ANYTHING.fullmatch(value):
            raise ValueError("identifier must have a value after its authority (AUTHORITY|VALUE)")
        criteria.update(identifier=value, authority=authority if separator else None)
    if criteria["birthdate"] and not _BIRTHDATE.fullmatch(criteria["birthdate"]):
        raise ValueError("birthdate must be YYYY, YYYY-MM or YYYY-MM-DD")
    limit = params.get("limit", str(MAX_RESULTS))
    if not (limit.isascii() and limit.isdigit()) or not 1 <= int(limit) <= MAX_RESULTS:
        raise ValueError(f"limit must be a whole number 1..{MAX_RESULTS}")
    criteria["limit"] = int(limit)
    return criteria


class _RecordResource(JsonResource):
    """A leaf that reads the record on the store's read pool and audits what it shows."""

    isLeaf = True

    def __init__(self, store, auditor):
        super().__init__()
        self._store = store
        self._auditor = auditor

    def _read(self, function, *args, **kwargs) -> defer.Deferred:
        return self._store.read(function, self._store.repository.engine, *args, **kwargs)

    def _audited(self, request, action: str, detail: str, reply: Reply) -> defer.Deferred:
        """``reply`` once the audit row is committed (no row, no answer: the failure is a 503)."""
        if self._auditor is None or reply.code != 200:
            return defer.succeed(reply)
        return self._auditor.record(request, action, detail=detail).addCallback(lambda _: reply)


class PatientsApi(_RecordResource):
    """``/api/patients`` (search) and ``/api/patients/{id}`` (one patient, everything)."""

    def render_GET(self, request) -> int:
        path = [segment for segment in request.postpath if segment]
        if not path:
            try:
                criteria = _search_criteria(request)
            except ValueError as error:
                return serve(request, defer.succeed(error_reply(400, str(error))))
            # The criteria's names and the ids found are audited, never the values asked for.
            asked = ",".join(name for name in _CRITERIA if criteria.get(name))

            def found(patients: list[dict]) -> defer.Deferred:
                ids = ",".join(str(patient["id"]) for patient in patients)
                detail = f"criteria={asked} patients={ids}"
                return self._audited(request, "patient.search", detail, json_reply({"patients": patients}))

            return serve(request, self._read(find_patients, **criteria).addCallback(found))
        patient_id = parse_id(path[0]) if len(path) == 1 else None
        if patient_id is None:
            return serve(request, defer.succeed(error_reply(404, "no such resource: use /api/patients/{id}")))

        def shown(patient: dict | None) -> defer.Deferred:
            reply = (
                json_reply(patient)
                if patient is not None
                else error_reply(404, f"there is no patient {patient_id}")
            )
            return self._audited(request, "patient.view", f"patient {patient_id}", reply)

        return serve(request, self._read(get_patient, patient_id).addCallback(shown))


def _outcome(code: int, text: str) -> Reply:
    body = json_reply(
        {
            "resourceType": "OperationOutcome",
            "issue": [
                {"severity": "error", "code": "not-found" if code == 404 else "invalid", "diagnostics": text}
            ],
        },
        code,
    )
    return Reply(body.code, body.body, FHIR_CONTENT_TYPE)


class FhirApi(_RecordResource):
    """``/fhir/Patient/{id}/$everything``: the patient's Bundle as application/fhir+json."""

    def render_GET(self, request) -> int:
        path = [segment for segment in request.postpath if segment]
        patient_id = (
            parse_id(path[1])
            if len(path) == 3 and path[0] == b"Patient" and path[2] == b"$everything"
            else None
        )
        if patient_id is None:
            return serve(request, defer.succeed(_outcome(404, "only Patient/{id}/$everything is served")))
        scheme = "https" if request.isSecure() else "http"
        host = (request.getHeader(b"host") or b"localhost").decode("ascii", "replace")
        base_url = f"{scheme}://{host}/fhir"

        def exported(bundle: Mapping | None) -> defer.Deferred:
            if bundle is None:
                return defer.succeed(_outcome(404, f"there is no Patient/{patient_id}"))
            reply = json_reply(bundle)
            return self._audited(
                request,
                "patient.export",
                f"patient {patient_id}",
                Reply(reply.code, reply.body, FHIR_CONTENT_TYPE),
            )

        return serve(request, self._read(everything, patient_id, base_url=base_url).addCallback(exported))
