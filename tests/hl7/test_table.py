"""engine/hl7/table.py: a message as segments and named fields, repetitions and components."""

from __future__ import annotations

from engine.hl7.table import message_table

_ADT = (
    "MSH|^~\\&|PMS|CLINIC|HUB|TEST|20260101120000||ADT^A04^ADT_A01|CTRL1|P|2.5.1\r"
    "PID|1||12^^^PMS^MR~99^^^SSA||DOE\\S\\X^JANE||19800101|F\r"
    "ZPX|1|local\r"
)


def test_fields_are_named_for_the_version_with_repetitions_and_components():
    """PID-3's two repetitions and PID-5's components carry their names; a leaf value is unescaped."""
    msh, pid, zpx = message_table(_ADT, "2.5")
    assert msh["segment"] == "MSH"
    assert [(f["position"], f["name"]) for f in msh["fields"][:3]] == [
        (1, "Field Separator"),
        (2, "Encoding Characters"),
        (3, "Sending Application"),
    ]
    fields = {f["position"]: f for f in pid["fields"]}
    assert fields[3]["name"] == "Patient Identifier List"
    assert [[(c["position"], c["name"], c["value"]) for c in r] for r in fields[3]["repetitions"]] == [
        [(1, "Id Number", "12"), (4, "Assigning Authority", "PMS"), (5, "Identifier Type Code", "MR")],
        [(1, "Id Number", "99"), (4, "Assigning Authority", "SSA")],
    ]
    assert fields[5]["value"] == "DOE\\S\\X^JANE"  # with parts: as written
    assert fields[5]["repetitions"][0][0] == {"position": 1, "name": "Family Name", "value": "DOE^X"}
    assert (fields[7]["name"], fields[7]["value"], fields[7]["repetitions"]) == (
        "Date Time Of Birth",
        "19800101",
        [],
    )
    assert 2 not in fields  # empty fields are left out
    assert zpx == {
        "segment": "ZPX",
        "fields": [
            {"position": 1, "name": None, "value": "1", "repetitions": []},
            {"position": 2, "name": None, "value": "local", "repetitions": []},
        ],
    }


def test_text_that_is_no_message_has_no_segments():
    """An error text or an answer that is not HL7 gives an empty table, never an exception."""
    assert message_table("connection refused", "2.5") == []
    assert message_table("", "2.5") == message_table(None, "2.5") == []
