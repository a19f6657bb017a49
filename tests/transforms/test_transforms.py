"""Building and checking transforms: names by YAML path, unknown tables, and every kind on any message."""

from __future__ import annotations

from hypothesis import HealthCheck, assume, given, settings

from engine.errors import HL7Error, TransformError
from engine.hl7.message import Message
from engine.transforms.lookup import LookupTable
from engine.transforms.spec import TransformSpec
from engine.transforms.transforms import check_transforms
from tests.transforms.messages import hl7_texts
from tests.transforms.steps import PATH, build
from tests.transforms.test_xml import IDENTITY


def test_check_transforms_reports_unknown_tables():
    """A map naming a table that is not defined is reported at its table key, with the known names."""
    specs = [
        TransformSpec.model_validate({"map": {"field": "PV1-3.1", "table": name}})
        for name in ("locations", "payer")
    ]
    assert check_transforms(
        specs, path_loc=("channels", 2, "transforms"), table_names={"locations", "payers"}
    ) == [
        (("channels", 2, "transforms", 1, "map", "table"), "no table named 'payer'; known: locations, payers")
    ]


def test_transforms_are_named_by_their_yaml_path():
    """build_transforms names each transform path[i]."""
    assert [t.name for t in build({"trim": {"field": "PID-5.1"}}, {"set_version": "2.5"})] == [
        f"{PATH}[0]",
        f"{PATH}[1]",
    ]


# --- robustness -----------------------------------------------------------------------------------

_EVERY_TRANSFORM = [
    {"set": {"field": "PID-3[2].1.2", "value": "a|b"}},
    {"copy": {"from": "PID-3", "to": "OBX[2]-5"}},
    {"copy": {"from": "MSH-2", "to": "PID-2.2"}},
    {"delete": {"field": "PID-3"}},
    {"delete": {"field": "OBX-5[2]"}},
    {"delete": {"field": "PID-3.1"}},
    {"map": {"field": "PID-3.1", "table": "t", "on_miss": "keep"}},
    {"replace": {"field": "PID-3.1", "pattern": "[AB]", "with": "|"}},
    {"date": {"field": "PID-3.1", "from": "hl7", "to": "%Y"}},
    {"case": {"field": "OBX-5", "to": "upper"}},
    {"trim": {"field": "PID-3.1.1"}},
    {"add_segment": {"segment": "ZAD|a^b&c~d\\F\\", "after": "PID"}},
    {"remove_segment": {"segment": "OBX", "occurrence": 1}},
    {"rename_segment": {"from": "PID", "to": "ZID"}},
    {"split": {"field": "PID-3", "separator": "A"}},
    {"join": {"field": "OBX-5", "separator": "|"}},
    {"set_version": "2.5.1"},
    {"xslt": {"inline": IDENTITY}},
    {"xpath": {"select": "string(//hl7:PID.3[1])", "to": "ZXP-1"}},
]
_ALL_TRANSFORMS = build(*_EVERY_TRANSFORM, tables={"t": LookupTable("t", {"A": "B^C"})})


@given(hl7_texts())
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_transforms_give_a_parseable_message_or_a_transform_error(text):
    """On any parseable message, each transform gives a message that parses again, or a TransformError."""
    try:
        Message.parse(text)
    except HL7Error:
        assume(False)
    for transform in _ALL_TRANSFORMS:
        try:
            result = transform.apply(Message.parse(text))
        except TransformError as error:
            assert str(error).startswith(f"{transform.name} (")
            continue
        assert Message.parse(result.to_text()).to_text() == result.to_text()
