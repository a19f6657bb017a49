"""engine/web/search.py: a search request's parameters become a MessageQuery, or a BadRequest saying why."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from twisted.web.test.requesthelper import DummyRequest

from engine.store.reads import MessageQuery
from engine.web.search import BadRequest, message_query


def search_request(**params: str | list[str]) -> DummyRequest:
    """A GET /api/messages request with these query parameters (a list: given that many times)."""
    request = DummyRequest([b""])
    request.args = {
        name.encode(): [value.encode() for value in (values if isinstance(values, list) else [values])]
        for name, values in params.items()
    }
    return request


def test_a_search_request_becomes_a_message_query():
    """Parameters map to MessageQuery: sender splits at '/', status is upper-cased, no offset means UTC."""
    query = message_query(
        search_request(
            control_id="CTRL1",
            patient_id="P-1",
            type="ADT^A01",
            sender="PMS/CLINIC",
            status="queued",
            channel="adt",
            listener="main",
            since="2026-01-01T08:00:00",
            until="2026-01-02T08:00:00+01:00",
            limit="20",
            before_id="99",
        )
    )
    assert query == MessageQuery(
        control_id="CTRL1",
        patient_id="P-1",
        message_type="ADT^A01",
        sending_application="PMS",
        sending_facility="CLINIC",
        status="QUEUED",
        channel="adt",
        listener="main",
        since=datetime(2026, 1, 1, 8, tzinfo=UTC),
        until=datetime(2026, 1, 2, 7, tzinfo=UTC),
        limit=20,
        before_id=99,
    )
    assert message_query(search_request(sender="PMS", control_id=" ")) == MessageQuery(
        sending_application="PMS", limit=50
    )


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"colour": "red"}, "unknown parameter 'colour'"),
        ({"type": ["ADT", "ORU"]}, "parameter 'type' given 2 times"),
        ({"limit": "0"}, "limit must be a whole number 1..500"),
        ({"limit": "-5"}, "limit must be a whole number 1..500"),
        ({"before_id": "0"}, "before_id must be a whole number 1..9223372036854775807"),
        ({"before_id": "9" * 30}, "before_id must be a whole number 1..9223372036854775807"),
        ({"until": "31/01/2025"}, "until must be an ISO 8601 time"),
    ],
)
def test_a_search_parameter_that_cannot_be_used_is_a_bad_request(params, reason):
    """message_query raises BadRequest naming the parameter and what it must be."""
    with pytest.raises(BadRequest, match=reason):
        message_query(search_request(**params))
