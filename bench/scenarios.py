"""The scenarios of issue 5, in one registry; each runs rows (one system, one connection count).

A scenario that can run has a ``run`` function returning its rows; one that cannot yet has a
``pending`` reason, which the report prints instead of figures. ``sweep`` measures every
selected system at every connection count with a fresh server process per row, which is all
an intake-like scenario needs; a scenario with its own fixtures (a downstream receiver, a
pre-filled store) writes its own ``run`` around ``measure``.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench import procstats
from bench.loadgen import LoadSpec, run_load
from bench.systems import SYSTEMS, RunContext, System, free_port


# Other load (percent of one core) above which a row's figures are flagged as noisy.
QUIET_PERCENT = 20.0


@dataclass(frozen=True)
class Options:
    """How long and how hard each row runs."""

    connections: tuple[int, ...] = (1, 8)
    seconds: float = 10.0
    warmup_seconds: float = 2.0
    max_messages: int = 2_000_000  # per row, measured; a run is bounded in count as well as in time
    generator_processes: int | None = None  # None: one per 8 connections
    systems: tuple[str, ...] | None = None  # None: every system the scenario measures
    reply_timeout: float = 10.0
    data_root: Path = Path(tempfile.gettempdir())
    tag: str = "BNCH"
    keep_workdirs: bool = False
    repeat: int = 1  # runs per row; the report shows the median
    quiet_wait_seconds: float = 30.0  # before each row, wait at most this long for other work on the machine to calm down


@dataclass
class Row:
    """One measured (or unavailable) combination of scenario, system and connection count."""

    scenario: str
    system: str
    label: str
    role: str
    connections: int
    status: str = "ok"  # ok | unavailable | failed
    reason: str = ""
    messages: int = 0
    seconds: float = 0.0
    rate: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    warmup_messages: int = 0
    server_cpu_seconds: float = 0.0
    server_cpu_us_per_message: float | None = None
    server_cpu_percent: float = 0.0  # of one core, over the window
    peak_rss_mb: float = 0.0
    generator_cpu_percent: float = 0.0  # of one core
    other_cpu_percent: float = 0.0  # everything else on the machine, of one core: noise if large
    generator_processes: int = 1
    observed: dict = field(default_factory=dict)  # e.g. rows stored by the engine
    known_issue: str = ""  # what is known to be wrong with this system's answers
    rate_runs: list[float] = field(default_factory=list)  # rate of every run of this row (--repeat)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Scenario:
    """A benchmark scenario: what it measures and how, or why it cannot run yet."""

    name: str
    title: str
    systems: tuple[str, ...] = ()
    run: Callable[[Scenario, Options, RunContext], list[Row]] | None = None
    pending: str | None = None


def measure(scenario: str, system: System, connections: int, options: Options, context: RunContext, *, on_window=None) -> Row:
    """Start the system on a free port in a fresh folder, run the load, stop it, and say what it cost."""
    row = Row(scenario=scenario, system=system.name, label=system.label, role=system.role, connections=connections, known_issue=system.known_issue)
    processes = options.generator_processes or math.ceil(connections / 8)
    row.generator_processes = min(processes, connections)
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{system.name}-{connections}-", dir=options.data_root))
    spec = LoadSpec(
        port=free_port(),
        connections=connections,
        processes=processes,
        seconds=options.seconds,
        warmup_seconds=options.warmup_seconds,
        max_messages=options.max_messages,
        # Control ids: run tag (4) + system (2) + connections (2) + C + connection (2) + sequence (7) = 18 characters.
        tag=f"{options.tag}{system.name[:2].upper()}{connections:02d}",
        reply_timeout=options.reply_timeout,
    )
    samples: dict[str, tuple[float, float]] = {}
    server = None
    if options.quiet_wait_seconds > 0:
        procstats.wait_until_quiet(QUIET_PERCENT, options.quiet_wait_seconds)
    try:
        server = system.start(spec.port, workdir, context)

        def window(phase: str) -> None:
            samples[phase] = (procstats.cpu_seconds(server.pid), procstats.machine_busy_seconds())
            if on_window:
                on_window(phase, server)

        result = run_load(spec, on_window=window)
        row.peak_rss_mb = procstats.peak_rss_bytes(server.pid) / 2**20
    except Exception as exc:  # one row failing (a server that will not start) must not end the run
        row.status, row.reason = "failed", f"{type(exc).__name__}: {exc}"
        return row
    finally:
        if server is not None:
            server.stop()
            if server.exit_code not in (0, None) and row.status == "ok":
                row.reason = f"server exited with {server.exit_code} when stopped: {server.log_tail(2)}"
        row.observed = system.observe(workdir) if server is not None else {}
        if not options.keep_workdirs:
            shutil.rmtree(workdir, ignore_errors=True)
    server_cpu = samples["end"][0] - samples["start"][0]
    machine_cpu = samples["end"][1] - samples["start"][1]
    row.messages, row.seconds, row.rate, row.errors = result.messages, result.seconds, result.rate, result.errors
    row.p50_ms, row.p99_ms, row.max_ms = result.percentiles(0.5, 0.99, 1.0) if result.messages else (None, None, None)
    row.error_samples = result.error_samples
    row.warmup_messages = result.warmup_messages
    row.server_cpu_seconds = server_cpu
    row.server_cpu_us_per_message = server_cpu / result.messages * 1e6 if result.messages else None
    row.server_cpu_percent = 100 * server_cpu / result.seconds
    row.generator_cpu_percent = 100 * result.generator_cpu_seconds / result.seconds
    row.other_cpu_percent = max(0.0, 100 * (machine_cpu - server_cpu - result.generator_cpu_seconds) / result.seconds)
    return row


def sweep(scenario: Scenario, options: Options, context: RunContext, *, progress=print) -> list[Row]:
    """Every selected system of the scenario at every connection count, one fresh server per run.

    With ``options.repeat`` > 1 the whole sweep is run that many times in rounds (so a burst of
    other work on the machine hits one run of several systems, not every run of one), and each
    row is the run with the median rate; ``rate_runs`` keeps every run's rate.
    """
    chosen = [name for name in scenario.systems if options.systems is None or name in options.systems]
    unavailable: dict[str, str | None] = {}
    for name in chosen:
        progress(f"  preparing {SYSTEMS[name].label} ...")
        unavailable[name] = SYSTEMS[name].prepare()
    runs: dict[tuple[int, str], list[Row]] = {(c, n): [] for c in options.connections for n in chosen}
    for round_number in range(1, options.repeat + 1):
        for connections in options.connections:
            for name in chosen:
                system = SYSTEMS[name]
                if unavailable[name]:
                    continue
                counter = f" (run {round_number}/{options.repeat})" if options.repeat > 1 else ""
                progress(f"  {system.label}, {connections} connection(s){counter} ...")
                row = measure(scenario.name, system, connections, options, context)
                progress(f"    {_summary(row)}")
                runs[connections, name].append(row)
    rows = []
    for (connections, name), measured in runs.items():
        system = SYSTEMS[name]
        if unavailable[name]:
            rows.append(Row(scenario.name, name, system.label, system.role, connections, status="unavailable", reason=unavailable[name]))
            continue
        ok = sorted((r for r in measured if r.status == "ok"), key=lambda r: r.rate)
        row = ok[(len(ok) - 1) // 2] if ok else measured[0]
        row.rate_runs = [r.rate for r in measured if r.status == "ok"]
        rows.append(row)
    return rows


def _summary(row: Row) -> str:
    if row.status != "ok":
        return f"{row.status}: {row.reason}"
    p99 = f"{row.p99_ms:.2f}" if row.p99_ms is not None else "-"
    return f"{row.rate:,.0f} msg/s, p99 {p99} ms, {row.errors} error(s), other load {row.other_cpu_percent:.0f}% of a core"


SCENARIOS: dict[str, Scenario] = {s.name: s for s in [
    Scenario(
        "intake",
        "(1) Intake only: store + ACK",
        systems=("engine", "engine-power-loss", "python-hl7", "txhl7", "simple-hl7", "node-hl7-server", "ceiling"),
        run=sweep,
    ),
    Scenario(
        "end-to-end",
        "(2) End to end: intake -> filter -> transforms -> mllp destination -> SENT",
        pending="the harness needs a downstream MLLP receiver that it starts itself, an engine"
                " config with a filter, a few transforms and an mllp destination, and the SENT deliveries counted per"
                " destination (with their order) at the end",
    ),
    Scenario(
        "patient-record",
        "(3) Patient record ingest of a mixed ADT/SIU/ORU/DFT stream",
        pending="the harness needs an engine config whose channels feed the patient record, a"
                " stream whose patients recur (so identities and merges are exercised), and the records counted at the end",
    ),
    Scenario(
        "large-store",
        "(4) Intake with 1 million messages stored and 100,000 queued for a destination that is down",
        pending="the harness needs a store pre-filled with 1 million messages and 100,000 queued"
                " deliveries, built fast enough to run before every row, plus the search and RSS checks",
    ),
    Scenario(
        "postgresql",
        "(5) PostgreSQL instead of SQLite for (1) and (2)",
        pending="the harness needs a fresh database for every row on the PostgreSQL server at"
                " 127.0.0.1:5432 (as the tests use), and (2) first",
    ),
]}
