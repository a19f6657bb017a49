"""Defaults of the store that the config's models name too: importable without SQLAlchemy.

Store commands read the config's engine block (``engine.configengine``) before they know which
store they open, so these live apart from the modules that use them (``db``, ``pool``, ``cluster``).
"""

from __future__ import annotations

__all__ = ["DEFAULT_LEASE_SECONDS", "WAL_MAX_BYTES"]

# The most a SQLite WAL should hold (engine.store.wal_max_bytes); see checkpoints.py for how it is kept there.
WAL_MAX_BYTES = 64 * 1024 * 1024
#: How long a lease lives without renewal when the config does not say (``engine.cluster.lease_seconds``).
DEFAULT_LEASE_SECONDS = 10.0
