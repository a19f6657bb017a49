"""engine/errors.py: one root, EngineError, and what each error of the tree carries."""

from __future__ import annotations

import pytest

from engine import errors
from engine.errors import (
    ConfigError,
    EngineError,
    HL7Error,
    LeaseLost,
    RecordError,
    StoreError,
    TransformError,
)


def test_every_error_the_engine_raises_on_purpose_is_an_engine_error():
    """The tree has one root: catching EngineError catches every error the engine defines."""
    defined = [
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, Exception) and value.__module__ == errors.__name__
    ]
    assert set(defined) == {
        EngineError,
        ConfigError,
        HL7Error,
        StoreError,
        LeaseLost,
        TransformError,
        RecordError,
    }
    assert all(issubclass(error, EngineError) for error in defined)


def test_a_config_error_keeps_every_problem_and_says_one_a_line():
    """ConfigError takes any iterable of problems, keeps them as a list, and prints one per line."""
    error = ConfigError(problem for problem in ("a.yaml:1: one", "a.yaml:2: two"))
    assert (error.problems, str(error)) == (
        ["a.yaml:1: one", "a.yaml:2: two"],
        "a.yaml:1: one\na.yaml:2: two",
    )


def test_an_hl7_error_is_207_unless_it_says_otherwise():
    """The HL7 table 0357 code defaults to 207 (application internal error); the location is a tuple."""
    assert (HL7Error("x").code, HL7Error("x").location) == (207, ())
    error = HL7Error("bad MSH-1", code=102, location=["MSH", 1])
    assert (error.code, error.location, str(error)) == (102, ("MSH", 1), "bad MSH-1")


@pytest.mark.parametrize(
    ("options", "locked", "transient"),
    [({}, False, False), ({"transient": True}, False, True), ({"locked": True}, True, True)],
)
def test_a_lock_timeout_is_transient_too(options, locked, transient):
    """A store error is transient when the database itself failed; a lock that timed out is one of those."""
    error = StoreError("writing failed", **options)
    assert (error.locked, error.transient) == (locked, transient)


def test_a_lost_lease_is_a_store_error_that_waiting_does_not_cure():
    """LeaseLost names its key and is not transient: the same write fails again until the lease is back."""
    error = LeaseLost("queue:adt/emr")
    assert isinstance(error, StoreError)
    assert (error.key, error.transient, error.locked) == ("queue:adt/emr", False, False)
    assert "queue:adt/emr" in str(error)
