"""engine.channels.spec: which messages a channel accepts, by message type and sender."""

from __future__ import annotations

import fnmatch

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.channels.spec import ChannelConfig


def channel(types: list[str], senders: tuple[dict[str, str], ...] = ()) -> ChannelConfig:
    return ChannelConfig.model_validate(
        {"name": "c", "source": "pms", "accept": {"types": types, "senders": list(senders)}}
    )


@pytest.mark.parametrize(
    ("types", "message_type", "accepted"),
    [
        (["*"], "ADT^A01", True),
        (["*"], "ACK", True),
        (["*"], "", True),
        (["ADT"], "ADT^A01", True),
        (["ADT"], "ADT", True),
        (["ADT"], "ADT^A01^ADT_A01", True),
        (["ADT"], "ADTX^A01", False),
        (["ADT"], "ORU^R01", False),
        (["ADT"], "adt^a01", False),
        (["ADT^A0*"], "ADT^A01", True),
        (["ADT^A0*"], "ADT^A08", True),
        (["ADT^A0*"], "ADT^A11", False),
        (["ADT^A0*"], "ADT", False),
        (["ADT^A0?"], "ADT^A040", False),
        (["ORU^R01"], "ORU^R01", True),
        (["ORU^R01"], "ORU^R01^ORU_R01", True),
        (["ORU^R01"], "ORU^R30", False),
        (["ORU^R01"], "ORU", False),
        (["SIU^*"], "SIU^S12", True),
        (["SIU^*"], "SIU", False),
        (["*^A01"], "ADT^A01", True),
        (["*^A01"], "ORU^R01", False),
        (["A*"], "ACK", True),
        (["A*"], "ORU^R01", False),
        (["ADT", "ORU^R01"], "ORU^R01", True),
        (["ADT", "ORU^R01"], "SIU^S12", False),
    ],
)
def test_accepts_matches_message_types(types, message_type, accepted):
    """Patterns are fnmatch-style per component, case-sensitive; CODE alone takes any trigger."""
    assert channel(types).accepts(message_type, "PMS", "CLINIC") is accepted


@pytest.mark.parametrize(
    ("senders", "application", "facility", "accepted"),
    [
        ([], "ANY", "WHERE", True),
        ([{"application": "PMS"}], "PMS", "CLINIC", True),
        ([{"application": "PMS"}], "EMR", "CLINIC", False),
        ([{"facility": "CLINIC"}], "EMR", "CLINIC", True),
        ([{"application": "PMS", "facility": "CLINIC"}], "PMS", "OTHER", False),
        ([{"application": "PMS", "facility": "CLINIC"}], "PMS", "CLINIC", True),
        ([{"application": "PMS"}, {"application": "EMR"}], "EMR", "X", True),
        ([{"application": "PMS"}], "pms", "CLINIC", False),
    ],
)
def test_accepts_matches_senders(senders, application, facility, accepted):
    """Senders compare MSH-3.1/MSH-4.1 exactly; an omitted field or an empty list matches any sender."""
    assert channel(["*"], senders).accepts("ADT^A01", application, facility) is accepted


COMPONENT = st.text(alphabet="ABC01", max_size=4)
PATTERN_PART = st.text(alphabet="ABC01*?", min_size=1, max_size=3)


@given(code_pattern=PATTERN_PART, trigger_pattern=PATTERN_PART, code=COMPONENT, trigger=COMPONENT)
def test_accepts_agrees_with_fnmatch_per_component(code_pattern, trigger_pattern, code, trigger):
    """CODE^TRIGGER patterns match exactly when fnmatchcase matches both components."""
    expected = fnmatch.fnmatchcase(code, code_pattern) and fnmatch.fnmatchcase(trigger, trigger_pattern)

    assert channel([f"{code_pattern}^{trigger_pattern}"]).accepts(f"{code}^{trigger}", "A", "F") is expected
