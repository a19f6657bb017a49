"""The python transform: the function's message, its failures as TransformError, targets that fail."""

from __future__ import annotations

import pytest

from engine.errors import ConfigError
from engine.transforms.spec import TransformSpec
from engine.transforms.transforms import check_transforms
from tests.transforms.steps import PATH, build, failure, run

# --- python ---------------------------------------------------------------------------------------


def test_python_function_changes_the_message(adt):
    """python: calls the named function with the message and uses what it returns."""
    assert run(adt, {"python": "tests.transforms.hatch:mark_processed"}).get("MSH-8") == "HATCH"


def test_python_function_may_return_a_new_message(adt):
    """The returned Message replaces the one passed in."""
    result = run(adt, {"python": "tests.transforms.hatch:rebuild"})
    assert result is not adt
    assert len(result) == len(adt) - 1


def test_python_target_may_be_an_attribute_path(adt):
    """module:Class.method resolves attribute by attribute."""
    assert (
        run(adt, {"python": "tests.transforms.hatch:Namespace.upper_name"}).get("PID-5.1")
        == "EVERYMAN&&&&ANISTON"
    )


def test_python_exception_becomes_a_transform_error(adt):
    """Whatever the function raises is a TransformError with the transform's path and the exception."""
    assert failure(adt, {"python": "tests.transforms.hatch:explode"}) == (
        f"{PATH}[0] (python tests.transforms.hatch:explode): KeyError: 'PID-99'"
    )


def test_python_transform_error_keeps_its_reason(adt):
    """A TransformError from the function keeps its text, prefixed with the transform's path."""
    assert failure(adt, {"python": "tests.transforms.hatch:refuse"}) == (
        f"{PATH}[0] (python tests.transforms.hatch:refuse): PID-7 is in the future"
    )


def test_python_must_return_a_message(adt):
    """A function that returns None is a TransformError."""
    assert failure(adt, {"python": "tests.transforms.hatch:forget_to_return"}).endswith(
        "returned NoneType, not a Message"
    )


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        (
            "tests.transforms.nowhere:f",
            "cannot import tests.transforms.nowhere:"
            " ModuleNotFoundError: No module named 'tests.transforms.nowhere'",
        ),
        ("tests.transforms.hatch:missing", "tests.transforms.hatch has no missing"),
        (
            "tests.transforms.hatch:NOT_A_FUNCTION",
            "tests.transforms.hatch:NOT_A_FUNCTION is not callable (it is a str)",
        ),
    ],
)
def test_python_target_problems_are_reported_at_their_path(target, problem):
    """check_transforms reports a target that does not import or is not callable at (..., i, 'python')."""
    specs = [
        TransformSpec.model_validate({"trim": {"field": "PID-5"}}),
        TransformSpec.model_validate({"python": target}),
    ]
    assert check_transforms(specs, path_loc=("channels", 0, "transforms"), table_names=set()) == [
        (("channels", 0, "transforms", 1, "python"), problem)
    ]
    with pytest.raises(ConfigError, match=r"channels\[0\]\.transforms\[0\]\.python: "):
        build({"python": target})
