"""``hl7engine patient``: find, show and unmerge people of the unified patient record."""

from __future__ import annotations

import json
import sys

import click

from engine.cli.app import (
    DEFAULT_CONFIG,
    message_repository,
)


@click.group()
def patient() -> None:
    """Find and show people in the unified patient record."""


@patient.command("find")
@click.option("-c", "--config", "config_path", default=DEFAULT_CONFIG, show_default=True)
@click.option("--db")
@click.option("--identifier", help="An identifier value (any assigning authority unless --authority).")
@click.option("--authority", help="The identifier's assigning authority (PID-3.4).")
@click.option("--name", help="Family or given name prefix, any case.")
@click.option("--birthdate", help="YYYY-MM-DD")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="(the default) One JSON object per person.")
def patient_find(config_path, db, identifier, authority, name, birthdate, limit, as_json) -> None:
    """Search people by identifier, name or birth date; one JSON object per person (a line each).

    Exit status: 0 searched (even none found), 1 no store there, 2 no criterion.
    """
    from engine.record.query import find_patients

    if not (identifier or name or birthdate):
        raise click.UsageError("give --identifier, --name or --birthdate")
    engine = message_repository(config_path, db).engine
    for person in find_patients(
        engine, identifier=identifier, authority=authority, name=name, birthdate=birthdate, limit=limit
    ):
        click.echo(json.dumps(person, sort_keys=True, default=str))


@patient.command("show")
@click.argument("patient_id", type=click.IntRange(min=1))
@click.option("-c", "--config", "config_path", default=DEFAULT_CONFIG, show_default=True)
@click.option("--db")
@click.option("--fhir", "as_fhir", is_flag=True, help="Print the FHIR R4 $everything Bundle instead.")
@click.option("--json", "as_json", is_flag=True, help="On one line, for scripts (default: indented).")
def patient_show(patient_id, config_path, db, as_fhir, as_json) -> None:
    """Everything known about one person (JSON), or its FHIR R4 Bundle.

    Exit status: 0 shown, 1 no such person (or no store there).
    """
    from engine.record.fhir import everything
    from engine.record.query import get_patient

    engine = message_repository(config_path, db).engine
    found = everything(engine, patient_id) if as_fhir else get_patient(engine, patient_id)
    if found is None:
        click.echo(f"no patient {patient_id}", err=True)
        sys.exit(1)
    click.echo(json.dumps(found, indent=None if as_json else 2, sort_keys=True, default=str))


@patient.command("unmerge")
@click.argument("merge_id", type=int)
@click.option("-c", "--config", "config_path", default=DEFAULT_CONFIG, show_default=True)
@click.option("--db")
@click.option("--reason", default="", help="Why, kept in the record's history.")
def patient_unmerge(merge_id, config_path, db, reason) -> None:
    """Undo a merge (A40/A34/A39/A18): what it moved goes back to the prior person, who is active again."""
    from engine.errors import EngineError
    from engine.record.ingest import RecordIngestor

    engine = message_repository(config_path, db).engine
    try:
        moved = RecordIngestor(engine).unmerge(merge_id, reason=reason)
    except EngineError as error:
        click.echo(f"cannot undo merge {merge_id}: {error}", err=True)
        sys.exit(1)
    click.echo(f"merge {merge_id} undone: {moved} row(s) moved back")
