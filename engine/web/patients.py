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
from engine.web.apidoc import ID, operation
from engine.web.responses import error_reply, json_reply, parse_id, serve
from engine.web.roles import OPERATOR

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


#: The OpenAPI 3.1 path of the route this module adds (engine.web.api declares the others); ``x-role`` is
#: the least role it needs: person data is an operator's.
OPENAPI_PATHS: dict = {
    "/api/patients/{id}/history": {
        "get": operation(
            "The changes of the person's values and rows, newest first (audited: patient.history)",
            OPERATOR,
            parameters=[ID],
            responses={"404": {"description": "no such patient"}},
        )
    },
}
