"""Smoke tests of scenarios (2) to (6) of the benchmark (bench/).

Each is run briefly, end to end, and its checks pinned.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import psycopg
import pytest

from bench.end_to_end import order_problem
from bench.messages import generate, patient_id
from tests.fakes.bench import brief, run_report

MESSAGES = 200
# A short row: at most MESSAGES measured messages, in at most two seconds.
SHORT = [*brief(seconds=2, messages=MESSAGES), "--drain-seconds", "30"]


def run_bench(scenarios: str, data_root: Path, *extra: str) -> dict[str, dict]:
    """bench/run.py for these scenarios, briefly; the report's scenarios by name."""
    report = run_report(
        ["--scenario", scenarios, "--systems", "engine", *SHORT, *extra], data_root, timeout=240
    )
    return {scenario["name"]: scenario for scenario in report["scenarios"]}


def acknowledged(row: dict) -> int:
    return row["messages"] + row["warmup_messages"]


def check_intake(row: dict) -> None:
    """What every engine row must show: it ran, every ACK was right, everything acknowledged was stored."""
    assert row["status"] == "ok", row["reason"]
    assert row["errors"] == 0, row["error_samples"]
    assert 0 < row["messages"] <= MESSAGES
    assert row["observed"]["stored"] == acknowledged(row)


@pytest.fixture(scope="module")
def sqlite_scenarios(tmp_path_factory) -> dict[str, dict]:
    """One brief run of end-to-end, patient-record, patient-record-fresh and large-store.

    Large-store runs on a store of 2,000 messages, 200 of them queued.
    """
    return run_bench(
        "end-to-end,patient-record,patient-record-fresh,large-store",
        tmp_path_factory.mktemp("bench"),
        "--prefill-messages",
        "2000",
        "--prefill-queued",
        "200",
    )


def test_default_messages_are_unchanged_by_the_patient_pool():
    """Scenario (1) sends what it always sent: the default generation is pinned, byte for byte."""
    digest = hashlib.sha256()
    for template in generate(200, seed=7):
        digest.update(template.head + b"|" + template.tail)
    assert digest.hexdigest() == "b68815c57803fb21bf682566c464db0bb06566c15460b8d355600005782544c6"


def test_a_patient_pool_makes_patients_recur_across_seeds():
    """With a pool, messages of different seeds (connections) are about the same few patients."""
    first, second = generate(100, seed=1, patients=20), generate(100, seed=2, patients=20)
    ids = {patient_id(t) for t in first} | {patient_id(t) for t in second}
    assert len(ids) <= 20
    assert {patient_id(t) for t in first} & {patient_id(t) for t in second}
    assert len({t.kind for t in first}) > 1


def test_kinds_narrow_the_mix_and_each_fresh_message_is_a_new_patient():
    """Generated with kinds, only those kinds come; without a pool, no two messages share a patient."""
    templates = generate(300, seed=3, kinds=("ADT^A01", "ADT^A08"))
    assert {t.kind for t in templates} == {"ADT^A01", "ADT^A08"}
    assert len({patient_id(t) for t in templates}) == 300
    with pytest.raises(ValueError):
        generate(1, kinds=("ZZZ^Z01",))


def test_order_problem_names_reordering_loss_and_repeats():
    """Only the exact SENT sequence passes; a swap, a missing or a repeated message is described."""
    assert order_problem(["a", "b", "c"], ["a", "b", "c"]) is None
    assert "position 1" in order_problem(["a", "b", "c"], ["a", "c", "b"])
    assert "2 received, 3 SENT" in order_problem(["a", "b", "c"], ["a", "b"])
    assert "1 received more than once" in order_problem(["a", "b"], ["a", "a", "b"])


def test_end_to_end_delivers_everything_in_order(sqlite_scenarios):
    """Every acknowledged message is SENT downstream after the drain.

    The receiver got them in message id order.
    """
    scenario = sqlite_scenarios["end-to-end"]
    (row,) = scenario["rows"]
    check_intake(row)
    seen = row["observed"]
    assert seen["drained_after_seconds"] is not None
    assert seen["sent"] == acknowledged(row) == seen["downstream_received"]
    assert seen["deliveries"] == {"SENT": acknowledged(row)}
    assert seen["order_problem"] is None
    assert seen["delivered_rate"] >= 0 and seen["delivered_in_window"] <= seen["downstream_received"]
    (verdict,) = scenario["targets"]
    assert "order preserved; SENT = acknowledged" in verdict["measured"]


def test_patient_record_ingests_recurring_patients(sqlite_scenarios):
    """Every message is applied to the record.

    Patients recur, so there are fewer persons than messages, and more than none.
    """
    scenario = sqlite_scenarios["patient-record"]
    (row,) = scenario["rows"]
    check_intake(row)
    seen = row["observed"]
    assert seen["deliveries"] == {"SENT": acknowledged(row)}
    assert 0 < seen["persons"] <= min(seen["patient_pool"], acknowledged(row))
    assert seen["identifiers"] >= seen["persons"]
    assert seen["sent_rate_in_window"] >= 0
    assert len(scenario["targets"]) == 1


def test_patient_record_fresh_makes_a_patient_of_every_message(sqlite_scenarios):
    """Every message of the fresh variant is applied, and each made a person of its own."""
    scenario = sqlite_scenarios["patient-record-fresh"]
    (row,) = scenario["rows"]
    check_intake(row)
    seen = row["observed"]
    assert seen["deliveries"] == {"SENT": acknowledged(row)}
    assert seen["patient_pool"] is None
    assert seen["persons"] == acknowledged(row)
    (verdict,) = scenario["targets"]
    assert "800 messages/s of new patients" in verdict["target"]


def test_large_store_compares_with_an_empty_store_and_searches_under_load(sqlite_scenarios):
    """An empty and a pre-filled row side by side.

    New messages are counted apart from the pre-filled; every search found its message.
    """
    scenario = sqlite_scenarios["large-store"]
    rows = {row["observed"]["store"]: row for row in scenario["rows"]}
    assert set(rows) == {"empty", "prefilled"}
    for row in rows.values():
        check_intake(row)
    full = rows["prefilled"]["observed"]
    assert (full["prefilled_messages"], full["prefilled_queued"]) == (2000, 200)
    control = full["searches"]["control_id"]
    assert control["available"] and control["all_found"] and len(control["times_ms"]) == 10
    patient = full["searches"]["patient_id"]
    assert patient["all_found"] and (
        len(patient["times_ms"]) == 10 if patient["available"] else patient["reason"]
    )
    targets = [verdict["target"] for verdict in scenario["targets"]]
    assert any("intake within 20 %" in target for target in targets) and any(
        "RSS under 300 MB" in target for target in targets
    )


def test_realistic_delivers_everything_to_all_three_and_compares_with_store_only(tmp_path):
    """The realistic row beside the store-only row: after the drain every destination has every message.

    SENT = 3 x acknowledged, the partner got them in message id order, the archive holds a file each.
    """
    scenario = run_bench("realistic", tmp_path)["realistic"]
    rows = {bool(row["observed"].get("store_only")): row for row in scenario["rows"]}
    assert set(rows) == {True, False}
    for row in rows.values():
        check_intake(row)
    row = rows[False]
    seen = row["observed"]
    assert seen["drained_after_seconds"] is not None
    assert seen["deliveries"] == {
        name: {"SENT": acknowledged(row)} for name in ("partner", "record", "archive")
    }
    assert seen["sent_all"] == 3 * acknowledged(row)
    assert seen["partner_received"] == seen["archived_files"] == acknowledged(row)
    assert seen["order_problem"] is None
    targets = [verdict["target"] for verdict in scenario["targets"]]
    assert len(targets) == 3 and "0.8x the store-only intake" in targets[0]


@pytest.mark.postgres
def test_postgresql_rows_run_on_a_database_of_their_own_dropped_afterwards(tmp_path, postgres_url):
    """Intake and end to end on PostgreSQL: each row's database is gone after the run.

    The end-to-end checks hold there too.
    """
    scenarios = run_bench("postgresql", tmp_path)
    rows = {row["observed"]["compares_with"]: row for row in scenarios["postgresql"]["rows"]}
    assert set(rows) == {"intake", "end-to-end"}
    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3") as admin:
        for row in rows.values():
            check_intake(row)
            assert row["observed"]["database_dropped"]
            assert (
                admin.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (row["observed"]["database"],)
                ).fetchone()
                is None
            )
    end_to_end = rows["end-to-end"]["observed"]
    assert end_to_end["sent"] == acknowledged(rows["end-to-end"]) and end_to_end["order_problem"] is None
    assert all(
        verdict["met"] is None and "no SQLite" in verdict["measured"]
        for verdict in scenarios["postgresql"]["targets"]
    )


def test_profile_takes_the_one_scenario_it_can_run_else_intake():
    from bench.run import profiled_scenario

    assert profiled_scenario(("all",)) == "intake"
    assert profiled_scenario(("end-to-end",)) == "end-to-end"
    assert profiled_scenario(("patient-record",)) == "patient-record"
    assert profiled_scenario(("postgresql",)) == "postgresql"
    assert profiled_scenario(("postgresql", "end-to-end")) == "postgresql-end-to-end"
    for names in (("large-store",), ("intake", "end-to-end")):
        with pytest.raises(
            SystemExit, match="give one --scenario of intake, end-to-end, patient-record, postgresql"
        ):
            profiled_scenario(names)
