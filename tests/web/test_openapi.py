"""engine/web/openapi.py: one valid OpenAPI 3.1 document of every mounted API route, each with its role."""

from __future__ import annotations

import types

import pytest
import pytest_twisted
from openapi_spec_validator import validate

from engine.web.api import patient_resources
from engine.web.auth import Gate
from engine.web.openapi import API_MODULES, document, paths
from engine.web.roles import ROLES
from engine.web.server import PUBLIC_NAMES, Directory
from tests.fakes.harness import in_thread
from tests.fakes.web import basic, fetch

_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def test_the_document_is_valid_openapi_3_1():
    """openapi-spec-validator accepts the merged document."""
    validate(document())


def test_every_operation_names_a_role():
    """Each operation of each module has an x-role among viewer, operator, admin."""
    for path, item in paths().items():
        for method, operation in item.items():
            if method in _METHODS:
                assert operation.get("x-role") in ROLES, f"{method} {path}"


def test_an_operation_declared_twice_is_an_error():
    """Two modules declaring the same method on the same path are refused, not silently merged."""
    twin = types.ModuleType("twin")
    twin.OPENAPI_PATHS = {"/api/queues": {"get": {"x-role": "admin"}}}
    with pytest.raises(ValueError, match="twin: get /api/queues is declared twice"):
        paths((*API_MODULES, twin))


def _mounted(node, prefix: str = ""):
    """The paths of every resource put in the tree below ``node`` (through gates and directories)."""
    if isinstance(node, Gate):
        yield from _mounted(node.wrapped, prefix)
        if not isinstance(node.wrapped, Directory):
            yield prefix
        return
    for name, child in node.children.items():
        path = f"{prefix}/{name.decode()}"
        if isinstance(child, Gate | Directory):
            yield from _mounted(child, path)
        else:
            yield path


@pytest_twisted.inlineCallbacks
def test_every_mounted_route_is_documented_and_the_document_is_served(start_web, store):
    """Each gated resource of the server's tree has documented paths; GET /api/openapi.json serves them."""
    web = start_web(extra_resources=patient_resources(store))
    root = web.service.root
    gated = [
        path
        for name, child in root.children.items()
        if name.decode() not in PUBLIC_NAMES
        for path in _mounted(child, f"/{name.decode()}")
    ]
    assert {"/api/messages", "/api/config", "/api/openapi.json", "/api/patients", "/fhir"} <= set(gated)
    documented = paths()
    for path in gated:
        covering = [doc for doc in documented if doc == path or doc.startswith(path + "/")]
        assert covering, f"{path} is mounted but not in the OpenAPI document"
    served = yield in_thread(fetch, f"{web.url}/api/openapi.json", headers=basic())
    assert served.status == 200
    assert served.json() == document()
    unauthenticated = yield in_thread(fetch, f"{web.url}/api/openapi.json")
    assert unauthenticated.status == 401
