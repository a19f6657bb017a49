"""How a row is measured: options, the row's figures, ``measure`` (one server, one load) and ``sweep``.

``measure`` starts one system in a fresh folder, runs the load generator against it and says what
it cost; ``sweep`` measures every selected system of a scenario at every connection count. A
scenario with fixtures of its own (a downstream receiver, a pre-filled store, a PostgreSQL
database) gives ``sweep`` its own row function, which sets them up around ``measure``.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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
    quiet_wait_seconds: float = (
        30.0  # before each row, wait at most this long for other work on the machine to calm down
    )
    drain_seconds: float = 60.0  # after the load, how long the engine may take to deliver what it queued
    prefill_messages: int = 1_000_000  # large-store: messages already in the store
    prefill_queued: int = 100_000  # large-store: of those, queued for a destination that is down
    postgres_server: str = "postgresql://postgres@127.0.0.1:5432"  # where scenario (5) creates its databases


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
    start_seconds: float | None = None  # from launching the server until it accepted a connection
    observed: dict = field(default_factory=dict)  # e.g. rows stored by the engine; scenario figures
    known_issue: str = ""  # what is known to be wrong with this system's answers
    rate_runs: list[float] = field(default_factory=list)  # rate of every run of this row (--repeat)

    @property
    def acknowledged(self) -> int:
        """Messages positively acknowledged, warm-up included: what the server must have stored."""
        return self.messages + self.warmup_messages

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Verdict:
    """One performance target checked against measured rows; ``met`` is None when it cannot be said."""

    target: str
    measured: str
    met: bool | None

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Scenario:
    """A benchmark scenario: what it measures and how, or why it cannot run yet.

    ``figures`` gives a row's own figures for the report (column -> text), ``check`` the targets
    it is held to, from its rows and every scenario's rows of the run.
    """

    name: str
    title: str
    systems: tuple[str, ...] = ()
    run: Callable[[Scenario, Options, RunContext], list[Row]] | None = None
    pending: str | None = None
    figures: Callable[[Row], dict[str, str]] | None = None
    check: Callable[[list[Row], dict[str, list[Row]]], list[Verdict]] | None = None


#: measure's shape: (scenario name, system, connections, options, context) -> Row
RowFunction = Callable[[str, System, int, Options, RunContext], Row]


def both(first, second):
    """One ``on_window`` hook that runs ``first`` then ``second`` (either may be None)."""
    hooks = [hook for hook in (first, second) if hook]

    def window(phase, server):
        for hook in hooks:
            hook(phase, server)

    return window


def measure(
    scenario: str,
    system: System,
    connections: int,
    options: Options,
    context: RunContext,
    *,
    on_window=None,
    patients: int | None = None,
    load: Mapping[str, Any] | None = None,
) -> Row:
    """Start the system on a free port in a fresh folder, run the load, stop it, and say what it cost.

    ``on_window(phase, server)`` runs at the start and the end of the measured window, after the
    server's CPU was sampled (at the end, before the server is stopped); ``patients`` makes the
    generated messages share a pool of that many patients; ``load`` sets more of the LoadSpec
    (``kinds``, ``templates``).
    """
    row = Row(
        scenario=scenario,
        system=system.name,
        label=system.label,
        role=system.role,
        connections=connections,
        known_issue=system.known_issue,
    )
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
        # Control ids: run tag (4) + system (2) + connections (2) + C + connection (2) + sequence (7)
        # = 18 characters.
        tag=f"{options.tag}{system.name[:2].upper()}{connections:02d}",
        reply_timeout=options.reply_timeout,
        patients=patients,
        **(load or {}),
    )
    samples: dict[str, tuple[float, float]] = {}
    server = None
    if options.quiet_wait_seconds > 0:
        procstats.wait_until_quiet(QUIET_PERCENT, options.quiet_wait_seconds)
    try:
        launched = time.monotonic()
        server = system.start(spec.port, workdir, context)
        row.start_seconds = time.monotonic() - launched

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
    row.messages, row.seconds, row.rate, row.errors = (
        result.messages,
        result.seconds,
        result.rate,
        result.errors,
    )
    row.p50_ms, row.p99_ms, row.max_ms = (
        result.percentiles(0.5, 0.99, 1.0) if result.messages else (None, None, None)
    )
    row.error_samples = result.error_samples
    row.warmup_messages = result.warmup_messages
    row.server_cpu_seconds = server_cpu
    row.server_cpu_us_per_message = server_cpu / result.messages * 1e6 if result.messages else None
    row.server_cpu_percent = 100 * server_cpu / result.seconds
    row.generator_cpu_percent = 100 * result.generator_cpu_seconds / result.seconds
    row.other_cpu_percent = max(
        0.0, 100 * (machine_cpu - server_cpu - result.generator_cpu_seconds) / result.seconds
    )
    return row


@contextlib.contextmanager
def row_folder(options: Options, prefix: str) -> Iterator[Path]:
    """A fresh folder under the data root for a row's fixtures (a store, a receiver's record).

    It is removed afterwards unless --keep.
    """
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=options.data_root))
    try:
        yield folder
    finally:
        if not options.keep_workdirs:
            shutil.rmtree(folder, ignore_errors=True)


def sweep(
    scenario: Scenario,
    options: Options,
    context: RunContext,
    *,
    progress=print,
    variants: Sequence[RowFunction] = (measure,),
) -> list[Row]:
    """Every selected system of the scenario at every connection count, one fresh server per run.

    ``variants`` measure one row each (``measure`` unless the scenario has fixtures of its own);
    several variants of a system, e.g. an empty and a pre-filled store, are measured one after
    the other at each connection count, so that the rows compared were run side by side.
    With ``options.repeat`` > 1 the whole sweep is run that many times in rounds (so a burst of
    other work on the machine hits one run of several systems, not every run of one), and each
    row is the run with the median rate; ``rate_runs`` keeps every run's rate.
    """
    chosen = [name for name in scenario.systems if options.systems is None or name in options.systems]
    unavailable: dict[str, str | None] = {}
    for name in chosen:
        progress(f"  preparing {SYSTEMS[name].label} ...")
        unavailable[name] = SYSTEMS[name].prepare()
    keys = [(c, n, v) for c in options.connections for n in chosen for v in range(len(variants))]
    runs: dict[tuple[int, str, int], list[Row]] = {key: [] for key in keys}
    for round_number in range(1, options.repeat + 1):
        for connections, name, variant in keys:
            system = SYSTEMS[name]
            if unavailable[name]:
                continue
            counter = f" (run {round_number}/{options.repeat})" if options.repeat > 1 else ""
            progress(f"  {system.label}, {connections} connection(s){counter} ...")
            try:
                row = variants[variant](scenario.name, system, connections, options, context)
            except (
                Exception
            ) as exc:  # a fixture that cannot be set up (a receiver, a database) fails its row, not the run
                row = Row(
                    scenario.name,
                    name,
                    system.label,
                    system.role,
                    connections,
                    status="failed",
                    reason=f"{type(exc).__name__}: {exc}",
                )
            progress(f"    {row.label}: {summary(row)}")
            runs[connections, name, variant].append(row)
    rows = []
    for (connections, name, _), measured in runs.items():
        system = SYSTEMS[name]
        if unavailable[name]:
            rows.append(
                Row(
                    scenario.name,
                    name,
                    system.label,
                    system.role,
                    connections,
                    status="unavailable",
                    reason=unavailable[name],
                )
            )
            continue
        ok = sorted((r for r in measured if r.status == "ok"), key=lambda r: r.rate)
        row = ok[(len(ok) - 1) // 2] if ok else measured[0]
        row.rate_runs = [r.rate for r in measured if r.status == "ok"]
        rows.append(row)
    return rows


def summary(row: Row) -> str:
    """One line of progress for a measured row."""
    if row.status != "ok":
        return f"{row.status}: {row.reason}"
    p99 = f"{row.p99_ms:.2f}" if row.p99_ms is not None else "-"
    return (
        f"{row.rate:,.0f} msg/s, p99 {p99} ms, {row.errors} error(s),"
        f" other load {row.other_cpu_percent:.0f}% of a core"
    )
