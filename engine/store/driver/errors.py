"""Driver errors as the store reports them: StoreError, judging once whether the database itself failed."""

from __future__ import annotations

import contextlib

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from engine.errors import StoreError

# PostgreSQL SQLSTATEs that mean "someone else holds what we need": lock_not_available, deadlock_detected.
_POSTGRES_LOCK_STATES = frozenset({"55P03", "40P01"})
# SQLite primary result codes SQLITE_BUSY and SQLITE_LOCKED.
_SQLITE_LOCK_CODES = frozenset({5, 6})


def is_lock_error(error: BaseException) -> bool:
    """Whether a database error means another transaction held a lock we needed, longer than lock_timeout."""
    cause = error.orig if isinstance(error, sa_exc.DBAPIError) else error
    if getattr(cause, "sqlstate", None) in _POSTGRES_LOCK_STATES:
        return True
    code = getattr(cause, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _SQLITE_LOCK_CODES


def store_errors(action: str) -> contextlib.AbstractContextManager[None]:
    """Turn SQLAlchemy errors raised inside into StoreError, chained to the cause.

    ``locked`` is set for lock timeouts; ``transient`` also when the database is down or
    unreachable (SQLAlchemy's OperationalError and InterfaceError).
    """
    return _StoreErrors(action)


class _StoreErrors(contextlib.AbstractContextManager):
    """store_errors' context: a class, as it wraps every commit (a generator's cost ~3 times as much)."""

    __slots__ = ("_action",)

    def __init__(self, action: str):
        self._action = action

    def __exit__(self, kind, error, traceback) -> None:
        if isinstance(error, sa_exc.SQLAlchemyError):
            down = isinstance(error, (sa_exc.OperationalError, sa_exc.InterfaceError))
            raise StoreError(
                f"{self._action} failed: {describe(error)}", locked=is_lock_error(error), transient=down
            ) from error


def describe(error: BaseException) -> str:
    """What an error says that may be logged: never a value the failed statement carried.

    A StoreError's text is logged at error level, and values are patient data. A database error
    gives the first line of the driver's own message (SQLAlchemy's repeats the statement and its
    parameters; PostgreSQL's DETAIL quotes the row, e.g. ``Key (mrn)=(12345)``), except a data
    error, whose message quotes the value it could not take: its class only. Any other error
    (a bug, a bad argument) gives its class only, since its text may quote anything.
    """
    cause = error.orig if isinstance(error, sa_exc.StatementError) and error.orig is not None else error
    name = type(cause).__name__
    if isinstance(error, sa_exc.DataError) or not isinstance(error, sa_exc.SQLAlchemyError):
        return name
    return str(cause).strip().split("\n", 1)[0] or name


def as_sqlalchemy_error(error: Exception, sql: str, dialect: sa.Dialect) -> sa_exc.DBAPIError:
    """A driver's error (raised on its own cursor) as SQLAlchemy would raise it.

    So store_errors judges it as it judges SQLAlchemy's own.
    """
    return sa_exc.DBAPIError.instance(
        sql, None, error, dialect.dbapi.Error, hide_parameters=True, dialect=dialect
    )
