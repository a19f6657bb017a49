"""The engine's own store code, run for the large-store scenario in a process of its own.

``migrate URL`` creates the store's schema with the engine's migrations (what a pre-filled store
is built on). ``search URL ...`` times searches through the engine's repository
(``MessageRepository.search`` with ``MessageQuery(control_id=...)``, and ``patient_id=`` when the
engine has it) spread over a number of seconds, and prints the times as JSON. It imports only
the engine and the standard library: the benchmark runs it with the engine under test first on
PYTHONPATH, so the schema and the queries are that engine's, whichever revision it is.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

from engine.store.db import create_engine_for
from engine.store.messages import MessageRepository
from engine.store.migrations import upgrade
from engine.store.reads import MessageQuery
from engine.store.schema import messages


def migrate(url: str) -> dict:
    """Create (or bring up to date) the store at url with the engine's migrations."""
    engine = create_engine_for(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    return {"migrated": url}


def patient_search_missing() -> str | None:
    """Why this engine cannot search messages by patient identifier, or None when it can."""
    if "patient_id" not in messages.c:
        return "the messages table has no patient_id column"
    if "patient_id" not in {f.name for f in dataclasses.fields(MessageQuery)}:
        return "MessageQuery has no patient_id criterion"
    return None


def search(url: str, control_ids: list[str], patient_ids: list[str], seconds: float) -> dict:
    """Alternate control-id and patient-id searches evenly over ``seconds``.

    One untimed search of each kind comes first.
    """
    missing = patient_search_missing()
    kinds = {"control_id": control_ids, "patient_id": [] if missing else patient_ids}
    results = {kind: {"available": True, "times_ms": [], "all_found": True} for kind in kinds}
    results["patient_id"].update({"available": missing is None, "reason": missing or ""})
    planned = []
    for index, control_id in enumerate(control_ids):
        planned.append(("control_id", control_id))
        if kinds["patient_id"]:
            planned.append(("patient_id", patient_ids[index % len(patient_ids)]))
    engine = create_engine_for(url)
    repository = MessageRepository(engine)
    try:
        for kind, values in kinds.items():
            if values:
                started = time.perf_counter()
                repository.search(MessageQuery(**{kind: values[-1]}, limit=100))
                results[kind]["warmup_ms"] = (time.perf_counter() - started) * 1000
        begin = time.monotonic()
        for number, (kind, value) in enumerate(planned):
            time.sleep(max(0.0, begin + number * seconds / len(planned) - time.monotonic()))
            started = time.perf_counter()
            found = repository.search(MessageQuery(**{kind: value}, limit=100))
            results[kind]["times_ms"].append((time.perf_counter() - started) * 1000)
            results[kind]["all_found"] = results[kind]["all_found"] and bool(found)
    finally:
        engine.dispose()
    for result in results.values():
        if result["times_ms"]:
            result.update(median_ms=statistics.median(result["times_ms"]), max_ms=max(result["times_ms"]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate").add_argument("url")
    searching = commands.add_parser("search")
    searching.add_argument("url")
    searching.add_argument("--control-ids", required=True, help="comma-separated")
    searching.add_argument("--patient-ids", required=True, help="comma-separated, as many as control ids")
    searching.add_argument("--seconds", type=float, required=True)
    arguments = parser.parse_args()
    if arguments.command == "migrate":
        print(json.dumps(migrate(arguments.url)))
    else:
        control_ids, patient_ids = arguments.control_ids.split(","), arguments.patient_ids.split(",")
        print(json.dumps(search(arguments.url, control_ids, patient_ids, arguments.seconds)))


if __name__ == "__main__":
    main()
