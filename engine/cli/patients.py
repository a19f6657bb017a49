"""``hl7engine patient``: find and show people of the unified patient record; review and fix identity."""

from __future__ import annotations

import getpass
import json
import sys

import click

from engine.cli.app import DEFAULT_CONFIG, ROW_ID, message_repository, store_reads


def _birthdate(ctx, param, value: str | None) -> str | None:
    """``--birthdate``: a real calendar date written YYYY-MM-DD (2020-13-01 is refused, not searched)."""
    if value is None:
        return None
    from datetime import datetime

    try:
        return datetime.strptime(value, "%Y-%m-%d").date().isoformat()
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date written YYYY-MM-DD") from None


@click.group()
def patient() -> None:
    """Find and show people in the unified patient record."""


@patient.command("find")
@click.option("-c", "--config", "config_path", default=DEFAULT_CONFIG, show_default=True)
@click.option("--db")
@click.option("--identifier", help="An identifier value (any assigning authority unless --authority).")
@click.option("--authority", help="The identifier's assigning authority (PID-3.4).")
@click.option("--name", help="Family or given name prefix, any case.")
@click.option("--birthdate", callback=_birthdate, help="YYYY-MM-DD")
@click.option("--limit", type=ROW_ID, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="(the default) One JSON object per person.")
def patient_find(config_path, db, identifier, authority, name, birthdate, limit, as_json) -> None:
    """Search people by identifier, name or birth date; one JSON object per person (a line each).

    Exit status: 0 searched (even none found), 1 no store there, 2 no criterion.
    """
    from engine.record.view import find_patients

    if not (identifier or name or birthdate):
        raise click.UsageError("give --identifier, --name or --birthdate")
    # On a SQLite store the stdlib's sqlite3 reads the record (no SQLAlchemy to import).
    with (
        store_reads(config_path, db, _record_reads) as (_, reads),
        reads.record("searching patients") as rows,
    ):
        found = find_patients(
            rows, identifier=identifier, authority=authority, name=name, birthdate=birthdate, limit=limit
        )
    for person in found:
        click.echo(json.dumps(person, sort_keys=True, default=str))


@patient.command("show")
@click.argument("patient_id", type=ROW_ID)
@click.option("-c", "--config", "config_path", default=DEFAULT_CONFIG, show_default=True)
@click.option("--db")
@click.option("--fhir", "as_fhir", is_flag=True, help="Print the FHIR R4 $everything Bundle instead.")
@click.option("--json", "as_json", is_flag=True, help="On one line, for scripts (default: indented).")
def patient_show(patient_id, config_path, db, as_fhir, as_json) -> None:
    """Everything known about one person (JSON), or its FHIR R4 Bundle.

    Exit status: 0 shown, 1 no such person (or no store there).
    """
    from engine.record.view import get_patient

    with (
        store_reads(config_path, db, _record_reads) as (_, reads),
        reads.record(f"reading patient {patient_id}") as rows,
    ):
        found = get_patient(rows, patient_id)
    if found is None:
        click.echo(f"no patient {patient_id}", err=True)
        sys.exit(1)
    if as_fhir:
        from engine.record.fhir import LOCAL_BASE, bundle

        found = bundle(found, base_url=LOCAL_BASE)
    click.echo(json.dumps(found, indent=None if as_json else 2, sort_keys=True, default=str))


def _operator(config_path, db):
    """The RecordOperator on the configured store, and who acts (the OS user, from ``cli``)."""
    from engine.record.operations import Operator, RecordOperator

    engine = message_repository(config_path, db).engine
    return RecordOperator(engine), Operator(getpass.getuser(), "cli")


def _record_reads(engine):
    """The record's reads through SQLAlchemy, for a store other than a SQLite file."""
    from engine.record.query import RecordReads

    return RecordReads(engine)


def _record_operator(engine):
    """The record's reads through SQLAlchemy, for a store other than a SQLite file."""
    from engine.record.operations import RecordOperator

    return RecordOperator(engine)


def _act(what: str, action) -> None:
    """Run an operator's action; its failure is a message and exit status 1."""
    from engine.errors import EngineError

    try:
        click.echo(action())
    except EngineError as error:
        click.echo(f"cannot {what}: {error}", err=True)
        sys.exit(1)


def _store_options(function):
    function = click.option("--db")(function)
    return click.option("-c", "--config", "config_path", default=DEFAULT_CONFIG, show_default=True)(function)


_REASON = click.option("--reason", required=True, help="Why: kept in the audit trail and the record.")


@patient.command("worklist")
@_store_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per open conflict.")
def patient_worklist(config_path, db, as_json) -> None:
    """Open identity conflicts and possible duplicates to review (ids and identifiers, no names)."""
    with store_reads(config_path, db, _record_operator) as (_, reads):  # the stdlib's sqlite3 on SQLite
        worklist = reads.worklist()
    for item in worklist:
        if as_json:
            click.echo(json.dumps(item, sort_keys=True))
        else:
            other = item["other_patient_id"] if item["other_patient_id"] is not None else "-"
            click.echo(f"{item['id']}\t{item['kind']}\t{item['patient_id']}\t{other}\t{item['detail']}")


@patient.command("merge")
@click.argument("survivor", type=ROW_ID)
@click.argument("prior", type=ROW_ID)
@_store_options
@_REASON
def patient_merge(survivor, prior, config_path, db, reason) -> None:
    """Merge person PRIOR into SURVIVOR (undo with ``patient unmerge``)."""
    operator, by = _operator(config_path, db)
    _act(
        f"merge {prior} into {survivor}",
        lambda: (
            f"merge {operator.merge(survivor, prior, reason=reason, by=by)}: {prior} merged into {survivor}"
        ),
    )


@patient.command("link")
@click.argument("survivor", type=ROW_ID)
@click.argument("prior", type=ROW_ID)
@_store_options
@_REASON
def patient_link(survivor, prior, config_path, db, reason) -> None:
    """Link person PRIOR to SURVIVOR as the same person (undo with ``patient unlink``)."""
    operator, by = _operator(config_path, db)
    _act(
        f"link {prior} to {survivor}",
        lambda: f"merge {operator.link(survivor, prior, reason=reason, by=by)}: {prior} linked to {survivor}",
    )


@patient.command("unlink")
@click.argument("merge_id", type=ROW_ID)
@_store_options
@_REASON
def patient_unlink(merge_id, config_path, db, reason) -> None:
    """Undo a link (A24, cross-reference, identity rule, an operator's link) by its merge id."""
    operator, by = _operator(config_path, db)
    _act(
        f"unlink merge {merge_id}",
        lambda: (
            f"merge {merge_id} unlinked: {operator.unlink(merge_id, reason=reason, by=by)} row(s) moved back"
        ),
    )


@patient.command("unmerge")
@click.argument("merge_id", type=ROW_ID)
@_store_options
@_REASON
def patient_unmerge(merge_id, config_path, db, reason) -> None:
    """Undo a merge or link: what it moved goes back to the prior person, who is active again."""
    operator, by = _operator(config_path, db)
    _act(
        f"undo merge {merge_id}",
        lambda: (
            f"merge {merge_id} undone: {operator.unmerge(merge_id, reason=reason, by=by)} row(s) moved back"
        ),
    )


@patient.command("resolve")
@click.argument("conflict_id", type=ROW_ID)
@_store_options
@_REASON
def patient_resolve(conflict_id, config_path, db, reason) -> None:
    """Dismiss an open conflict of the worklist (it stays in the record, resolved, with the reason)."""
    operator, by = _operator(config_path, db)
    _act(
        f"resolve conflict {conflict_id}",
        lambda: f"conflict {operator.resolve(conflict_id, reason=reason, by=by)} resolved",
    )
