"""engine/configtypes.py: the building blocks of every configuration model, checked where they are used."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from engine.configtypes import Frozen, HL7Text, Name, Seconds, check_not_empty


class Model(Frozen):
    """A configuration model of each building block."""

    name: Name = "a"
    text: HL7Text = "HUB"
    seconds: Seconds = 1.0


def _refused(**values) -> str:
    """The message of the one problem ``values`` have."""
    with pytest.raises(ValidationError) as raised:
        Model(**values)
    (problem,) = raised.value.errors()
    return problem["msg"]


@pytest.mark.parametrize("name", ["pms", "PMS-2", "lab_files", "v2.5", "0"])
def test_a_name_is_letters_digits_and_a_few_marks(name):
    """Names (of listeners, channels, destinations) take letters, digits, '_', '.' and '-'."""
    assert Model(name=name).name == name


@pytest.mark.parametrize("name", ["", "p m s", "pms/adt", "é"])
def test_other_names_are_refused_saying_what_a_name_may_hold(name):
    """A name with anything else is refused, with what was given."""
    assert _refused(name=name) == (f"Value error, must be letters, digits, '_', '.' or '-' (got {name!r})")


@pytest.mark.parametrize("text", ["A^B", "A|B", "A~B", "A\\B", "A&B", "A\rB", "A\nB"])
def test_hl7_text_may_not_hold_a_delimiter(text):
    """Text that goes into an HL7 field (an application name) may not hold a delimiter or a line break."""
    assert "must not contain HL7 delimiters" in _refused(text=text)
    assert _refused(text="") == "Value error, must not be empty"


def test_seconds_are_more_than_zero():
    """A duration of 0 or less is refused."""
    assert Model(seconds=0.5).seconds == 0.5
    assert _refused(seconds=0) == "Input should be greater than 0"


def test_a_model_is_frozen_and_refuses_unknown_keys():
    """Every configuration model is immutable, and a key it does not know is an error."""
    model = Model()
    with pytest.raises(ValidationError, match="frozen"):
        model.name = "b"
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Model(colour="red")


def test_not_empty_is_checked_after_the_items():
    """check_not_empty refuses '' and () and passes anything else through as it is."""
    assert check_not_empty("x") == "x" and check_not_empty(("a",)) == ("a",)
    for empty in ("", ()):
        with pytest.raises(ValueError, match="must not be empty"):
            check_not_empty(empty)
