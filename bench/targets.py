"""The performance targets (docs/performance.md), checked against a run's rows.

The targets are for a 2-core machine, SQLite, ACK after store, durability: process.

One function per scenario: ``check(rows, results)`` takes the scenario's rows and every
scenario's rows of the run (PostgreSQL is compared with the SQLite rows measured beside it) and
returns one ``Verdict`` per target line and connection count. A target is met only by a row
whose every ACK was right.
"""

from __future__ import annotations

from collections.abc import Iterator

from bench.harness import Row, Verdict

SEARCH_BOUND_MS = 50.0
RSS_BOUND_MB = 300.0
LARGE_STORE_SLOWDOWN = 0.2  # at most 20 % slower than on an empty store
POSTGRES_FACTOR = 2.0
REALISTIC_INTAKE_RATIO = 0.8  # intake with downstream work at least 0.8x the store-only intake
REALISTIC_P99_MS = 10.0
REALISTIC_RATE = 2000  # msg/s delivered to the partner and applied to the record


def _measured(rows: list[Row]) -> Iterator[Row]:
    return (row for row in rows if row.role == "engine" and row.status == "ok")


def _figure(row: Row, metric: str) -> float:
    """The intake rate, or a figure the scenario observed."""
    return row.rate if metric == "rate" else row.observed[metric]


def _rate(value: float) -> str:
    return f"{value:,.0f} msg/s"


def intake(rows: list[Row], results: dict[str, list[Row]]) -> list[Verdict]:
    """Intake: 5,000 msg/s on 8 connections, 1,500 on one, p99 under 5 ms.

    The engine with durability: process is held to them.
    """
    verdicts = []
    for connections, text, metric, bound in (
        (8, "intake, 8 connections: at least 5,000 messages/s", "rate", 5000),
        (1, "intake, 1 connection: at least 1,500 messages/s", "rate", 1500),
        (1, "intake, 1 connection: p99 under 5 ms", "p99_ms", 5.0),
        (8, "intake, 8 connections: p99 under 5 ms", "p99_ms", 5.0),
    ):
        row = next(
            (r for r in _measured(rows) if r.system == "engine" and r.connections == connections), None
        )
        if row is None:
            continue
        value = getattr(row, metric)
        if metric == "rate":
            verdicts.append(Verdict(text, _rate(value), value >= bound and row.errors == 0))
        else:
            verdicts.append(
                Verdict(
                    text,
                    "-" if value is None else f"{value:.2f} ms",
                    value is not None and value < bound and row.errors == 0,
                )
            )
    return verdicts


def end_to_end(rows: list[Row], results: dict[str, list[Row]]) -> list[Verdict]:
    """End to end: 2,000 msg/s delivered downstream, order preserved.

    Nothing may be lost either: SENT = acknowledged.
    """
    verdicts = []
    for row in _measured(rows):
        seen = row.observed
        if "delivered_rate" not in seen:
            continue
        in_order = seen["order_problem"] is None
        complete = seen["sent"] == row.acknowledged
        measured = (
            f"{_rate(seen['delivered_rate'])} delivered;"
            f" order {'preserved' if in_order else 'NOT preserved'};"
            f" SENT {'=' if complete else '≠'} acknowledged"
        )
        met = seen["delivered_rate"] >= 2000 and in_order and complete and row.errors == 0
        verdicts.append(
            Verdict(
                f"end to end, {row.connections} connection(s): at least 2,000 messages/s delivered"
                " downstream, order preserved",
                measured,
                met,
            )
        )
    return verdicts


def patient_record(rows: list[Row], results: dict[str, list[Row]]) -> list[Verdict]:
    """Patient record ingest: 1,000 messages/s applied to the record, none refused."""
    return _record_verdicts(rows, 1000, "ingested")


def patient_record_fresh(rows: list[Row], results: dict[str, list[Row]]) -> list[Verdict]:
    """Fresh patients (every message a new person): 800 messages/s applied to the record, none refused."""
    return _record_verdicts(rows, 800, "of new patients ingested")


def _record_verdicts(rows: list[Row], target: int, what: str) -> list[Verdict]:
    verdicts = []
    for row in _measured(rows):
        seen = row.observed
        if "sent_rate_in_window" not in seen:
            continue
        failed = seen["deliveries"].get("ERROR", 0)
        measured = f"{_rate(seen['sent_rate_in_window'])} applied (intake {_rate(row.rate)})" + (
            f"; {failed:,} refused" if failed else ""
        )
        met = seen["sent_rate_in_window"] >= target and not failed and row.errors == 0
        verdicts.append(
            Verdict(
                f"patient record, {row.connections} connection(s): at least {target:,} messages/s {what}",
                measured,
                met,
            )
        )
    return verdicts


def large_store(rows: list[Row], results: dict[str, list[Row]]) -> list[Verdict]:
    """1 million stored, 100,000 queued: intake within 20 % of the empty store's.

    Also searches under 50 ms and RSS under 300 MB.
    """
    verdicts = []
    measured = list(_measured(rows))
    for full in (r for r in measured if r.observed.get("store") == "prefilled"):
        empty = next(
            (r for r in measured if r.observed.get("store") == "empty" and r.connections == full.connections),
            None,
        )
        stored = (
            f"{full.observed['prefilled_messages']:,} stored, {full.observed['prefilled_queued']:,} queued"
        )
        prefix = f"{stored}, {full.connections} connection(s)"
        if empty is None:
            verdicts.append(
                Verdict(
                    f"{prefix}: intake within 20 % of the empty store",
                    f"{_rate(full.rate)}; the empty-store row did not run",
                    None,
                )
            )
        else:
            ratio = full.rate / empty.rate if empty.rate else 0.0
            verdicts.append(
                Verdict(
                    f"{prefix}: intake within 20 % of the empty store",
                    f"{_rate(full.rate)} vs {_rate(empty.rate)} ({ratio:.0%})",
                    ratio >= 1 - LARGE_STORE_SLOWDOWN and full.errors == 0 and empty.errors == 0,
                )
            )
        for kind in ("control_id", "patient_id"):
            search = full.observed["searches"].get(kind, {})
            what = f"{prefix}: a {kind.replace('_', '-')} search under 50 ms, under load"
            if not search.get("available"):
                verdicts.append(Verdict(what, f"not available: {search.get('reason', 'not run')}", None))
            elif not search.get("times_ms"):
                verdicts.append(Verdict(what, "no search finished", False))
            else:
                verdicts.append(
                    Verdict(
                        what,
                        f"median {search['median_ms']:.1f} ms, max {search['max_ms']:.1f} ms"
                        f" over {len(search['times_ms'])}",
                        search["max_ms"] < SEARCH_BOUND_MS and search["all_found"],
                    )
                )
        verdicts.append(
            Verdict(
                f"{prefix}: engine RSS under 300 MB throughout",
                f"peak {full.peak_rss_mb:,.0f} MB",
                full.peak_rss_mb < RSS_BOUND_MB,
            )
        )
    return verdicts


def postgresql(rows: list[Row], results: dict[str, list[Row]]) -> list[Verdict]:
    """PostgreSQL: within a factor of two of the SQLite figures of the same run.

    The figures compared: the intake rate; end to end, the rate delivered.
    """
    verdicts = []
    for row in _measured(rows):
        other_scenario = row.observed.get("compares_with")
        if other_scenario is None:
            continue
        metric = "delivered_rate" if other_scenario == "end-to-end" else "rate"
        value = _figure(row, metric)
        what = (
            f"PostgreSQL, {other_scenario}, {row.connections} connection(s): within a factor of two of SQLite"
        )
        sqlite = next(
            (
                r
                for r in _measured(results.get(other_scenario, []))
                if r.system == row.system and r.connections == row.connections
            ),
            None,
        )
        if sqlite is None:
            verdicts.append(
                Verdict(
                    what,
                    f"{_rate(value)}; no SQLite {other_scenario} row at {row.connections} connection(s)"
                    " in this run to compare with",
                    None,
                )
            )
            continue
        other = _figure(sqlite, metric)
        ratio = value / other if other else 0.0
        met = ratio >= 1 / POSTGRES_FACTOR and row.errors == 0 and sqlite.errors == 0
        verdicts.append(Verdict(what, f"{_rate(value)} vs SQLite {_rate(other)} ({ratio:.2f}×)", met))
    return verdicts


def realistic(rows: list[Row], results: dict[str, list[Row]]) -> list[Verdict]:
    """A realistic config: intake at least 0.8x store-only with p99 under 10 ms, 2,000 msg/s end to end.

    End to end: delivered to the partner and applied to the record within the window, and after
    the drain everything delivered (SENT = 3 x acknowledged).
    """
    verdicts = []
    measured = list(_measured(rows))
    for row in (r for r in measured if "sent_all" in r.observed):
        seen = row.observed
        processes = "" if row.system == "engine" else f" ({row.system})"
        prefix = f"realistic{processes}, {row.connections} connection(s)"
        store_only = next(
            (
                r
                for r in measured
                if r.observed.get("store_only") and (r.connections, r.system) == (row.connections, row.system)
            ),
            None,
        )
        what = f"{prefix}: intake at least {REALISTIC_INTAKE_RATIO:g}x the store-only intake"
        if store_only is None:
            verdicts.append(Verdict(what, f"{_rate(row.rate)}; the store-only row did not run", None))
        else:
            ratio = row.rate / store_only.rate if store_only.rate else 0.0
            verdicts.append(
                Verdict(
                    what,
                    f"{_rate(row.rate)} vs {_rate(store_only.rate)} ({ratio:.2f}x)",
                    ratio >= REALISTIC_INTAKE_RATIO and row.errors == 0 and store_only.errors == 0,
                )
            )
        p99 = row.p99_ms
        verdicts.append(
            Verdict(
                f"{prefix}: intake p99 under {REALISTIC_P99_MS:g} ms",
                "-" if p99 is None else f"{p99:.2f} ms",
                p99 is not None and p99 < REALISTIC_P99_MS and row.errors == 0,
            )
        )
        complete = seen["sent_all"] == 3 * row.acknowledged
        slowest = min(seen["delivered_rate"], seen["applied_rate"])
        verdicts.append(
            Verdict(
                f"{prefix}: at least 2,000 messages/s delivered and applied, everything delivered",
                f"{_rate(seen['delivered_rate'])} delivered, {_rate(seen['applied_rate'])} applied;"
                f" SENT {'=' if complete else '≠'} 3 x acknowledged",
                slowest >= REALISTIC_RATE and complete and row.errors == 0,
            )
        )
    return verdicts
