"""The engine's exception tree: every error the engine raises on purpose is an EngineError."""

from __future__ import annotations


class EngineError(Exception):
    """Root of every error the engine raises on purpose."""


class ConfigError(EngineError):
    """The configuration is invalid; ``problems`` lists every problem with its YAML path."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class HL7Error(EngineError):
    """A message cannot be read; ``code`` is the HL7 table 0357 error code, ``location`` an ERR-2 location."""

    def __init__(self, message: str, *, code: int = 207, location: tuple = ()):
        self.code = code
        self.location = tuple(location)
        super().__init__(message)


class StoreError(EngineError):
    """The message store could not do what was asked (down, locked, full).

    ``transient``: the database itself failed (a lock timed out, the server is down or
    unreachable), not what was asked of it, so the same request may succeed later. ``locked``:
    a lock timed out (transient too).
    """

    def __init__(self, message: str, *, locked: bool = False, transient: bool = False):
        self.locked = locked
        self.transient = locked or transient
        super().__init__(message)


class LeaseLost(StoreError):
    """A write made under a lease found that this process no longer holds it: nothing was written.

    Another process took the work over (this one stopped renewing in time); the same write would
    fail again, so it is not transient: stop the work until the lease is held again.
    """

    def __init__(self, key: str):
        self.key = key
        super().__init__(f"lease {key} is no longer held by this process")


class TransformError(EngineError):
    """A filter or transform could not be applied to a message; the message goes to ERROR with this reason."""


class RecordError(EngineError):
    """The message (or operator request) cannot be applied to the patient record as it is.

    Sending it again unchanged fails again.
    """
