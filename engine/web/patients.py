"""The patient view's API: engine.web.api's ``/api/patients`` and ``/fhir``, and each patient's history.

    GET /api/patients/{id}/history     the changes of the patient's values and rows, newest first
                                       (engine.record.query.patient_history; audited: patient.history)

``patient_resources`` is engine.web.api's with this ``/api/patients``; the service mounts it.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.web import resource

from engine.record.query import patient_history
from engine.web import api
from engine.web.responses import error_reply, json_reply, parse_id, serve

__all__ = ["OPENAPI_PATHS", "PatientsView", "patient_resources"]


class PatientsView(api.PatientsApi):
    """``/api/patients`` (search, one patient) and ``/api/patients/{id}/history``."""

    def render_GET(self, request) -> int:
        path = [segment for segment in request.postpath if segment]
        if len(path) != 2 or path[1] != b"history":
            return super().render_GET(request)
        patient_id = parse_id(path[0])
        if patient_id is None:
            return serve(request, defer.succeed(error_reply(404, "no such resource: use /api/patients/{id}")))

        def shown(changes: list[dict]) -> defer.Deferred:
            reply = json_reply({"patient_id": patient_id, "history": changes})
            return self._audited(request, "patient.history", f"patient {patient_id}", reply)

        return serve(request, self._read(patient_history, patient_id).addCallback(shown))


def patient_resources(store, *, auditor=None) -> dict[str, resource.Resource]:
    """engine.web.api.patient_resources, ``api/patients`` serving each patient's history too."""
    return {**api.patient_resources(store, auditor=auditor), "api/patients": PatientsView(store, auditor)}


def _get(summary: str, parameters: tuple[tuple[str, str], ...]) -> dict:
    return {
        "get": {
            "summary": summary,
            "x-role": "operator",  # person data
            "parameters": [{"name": n, "in": where, "schema": {"type": "string"}} for n, where in parameters],
            "responses": {"200": {"description": "OK"}, "404": {"description": "no such patient"}},
        }
    }


_ID = (("id", "path"),)
#: The OpenAPI 3.1 paths of the patient routes; ``x-role`` is the least role each needs.
OPENAPI_PATHS: dict = {
    "/api/patients": _get(
        "Find patients by identifier ([AUTHORITY|]VALUE), name prefix, birth date (audited)",
        (("identifier", "query"), ("name", "query"), ("birthdate", "query"), ("limit", "query")),
    ),
    "/api/patients/{id}": _get(
        "One person: identifiers, names, visits, appointments, results, allergies, coverage, charges, merges",
        _ID,
    ),
    "/api/patients/{id}/history": _get("The changes of the person's values and rows, newest first", _ID),
    "/fhir/Patient/{id}/$everything": _get("The person as a FHIR R4 Bundle", _ID),
}
