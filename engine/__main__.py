"""``python -m engine`` runs the ``hl7engine`` command."""

from engine.cli import main

main()
