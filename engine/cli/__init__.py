"""The ``hl7engine`` command: run, reload, check, send, messages, resend, reprocess, nodes, patient,
prune, backup, rekey, new-key, hash-password, fhir.

``main`` is the Click group (``app``); each module of this package adds its commands to it:
``running`` (the engine process), ``send``, ``messages`` (stored messages), ``nodes`` (the
processes sharing the store), ``maintenance`` (retention, backup, keys), ``patients`` (the
unified record) and ``fhir`` (v2 files as FHIR Bundles).
"""

from engine.cli import fhir, maintenance, messages, nodes, patients, running, send  # noqa: F401  (they add the commands)
from engine.cli.app import main

__all__ = ["main"]
