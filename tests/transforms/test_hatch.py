"""The python transform: the function's message, its failures as TransformError, targets that fail."""

from __future__ import annotations

import hashlib
import sys

import pytest

from engine.errors import ConfigError
from engine.transforms.hatch import import_target
from engine.transforms.inputs import InputFile
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


def test_a_module_is_run_again_only_when_its_file_changed(tmp_path, monkeypatch):
    """import_target gives the function of the module as its file is now, with the file's hash.

    Unchanged, the module is the one imported; edited, it is a new module object (functions taken
    before keep working as they were); an edit that does not run leaves the last good module.
    """
    module = tmp_path / "hatch_edited_module.py"
    module.write_text("def f(message):\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    first = import_target("hatch_edited_module:f")
    assert import_target("hatch_edited_module:f").function is first.function
    assert first.source == InputFile(
        "module", "hatch_edited_module", str(module), hashlib.sha256(module.read_bytes()).hexdigest()
    )
    module.write_text("def f(message):\n    return 2\n")
    second = import_target("hatch_edited_module:f")
    assert (first.function(None), second.function(None)) == (1, 2)
    assert second.source.sha256 != first.source.sha256
    module.write_text("def f(message):\n    return (\n")
    with pytest.raises(ValueError, match="cannot import hatch_edited_module: SyntaxError"):
        import_target("hatch_edited_module:f")
    assert sys.modules["hatch_edited_module"].f is second.function


def test_a_module_without_a_source_file_has_no_source():
    """A built-in module's function resolves; there is no file to hash."""
    assert import_target("math:sqrt").source is None
