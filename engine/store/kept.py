"""A connection a writer thread keeps between its transactions (writer_lane.py's, record_lane.py's)."""

from __future__ import annotations

from collections.abc import Mapping

import sqlalchemy as sa
from twisted.logger import Logger

from engine.store.driver import set_pragmas, store_errors

log = Logger(namespace="engine.store")


class KeptConnection:
    """One connection a thread keeps between transactions, set up once; made anew after any error."""

    def __init__(self, engine: sa.Engine, pragmas: Mapping[str, object] | None = None):
        self._engine = engine
        self._pragmas = pragmas or {}
        self._connection: sa.Connection | None = None

    def get(self) -> sa.Connection:
        if self._connection is None:
            with store_errors("connecting to the store"):
                connection = self._engine.connect()
                try:
                    set_pragmas(connection, **self._pragmas)
                except BaseException:
                    connection.invalidate()
                    connection.close()
                    raise
            self._connection = connection
        return self._connection

    def drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                # Never back into the pool: it may be broken, or carry the pragmas set above.
                connection.invalidate()
                connection.close()
            except Exception:  # it is being thrown away; a dead connection may fail to close
                log.debug("closing a kept store connection failed")
