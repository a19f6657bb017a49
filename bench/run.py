"""Run the benchmark suite and write the report: ``python bench/run.py [options]``.

It sets itself up: the baselines it compares against are installed into bench-local folders on
first use (see bench/README.md), never into the project. Every row starts its own server
process on a free port of 127.0.0.1, drives it with the load generator, stops it, and records
what it measured; the report is printed and written to bench/results/latest.md and .json.
``--profile py-spy`` (or ``cprofile``) instead runs the engine once under the load with a
profiler (intake, or the one --scenario given: end-to-end, patient-record, realistic, postgresql, or
postgresql,end-to-end for end to end on PostgreSQL) and writes
bench/results/profile-<tool>[-<scenario>].md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import deps, procstats, report  # noqa: E402
from bench.harness import Options  # noqa: E402
from bench.loadgen import default_tag  # noqa: E402
from bench.scenarios import SCENARIOS  # noqa: E402
from bench.systems import SYSTEMS, RunContext  # noqa: E402

QUICK_SECONDS, QUICK_WARMUP = 3.0, 1.0


def _ints(text: str) -> tuple[int, ...]:
    values = tuple(int(v) for v in text.split(",") if v.strip())
    if not values or any(v < 1 or v > 64 for v in values):
        raise argparse.ArgumentTypeError("expected connection counts 1..64 separated by commas, e.g. 1,8")
    return values


def _names(known: dict) -> callable:
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(v.strip() for v in text.split(",") if v.strip())
        unknown = [n for n in names if n not in known and n != "all"]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown: {', '.join(unknown)}; known: {', '.join(known)}")
        return names

    return parse


def profiled_scenario(names: tuple[str, ...]) -> str:
    """The one scenario --profile runs: intake unless --scenario names one it can profile."""
    from bench.profiling import PROFILED

    if "all" in names:
        return "intake"
    if sorted(names) == ["end-to-end", "postgresql"]:  # end to end with the store on PostgreSQL
        return "postgresql-end-to-end"
    if len(names) != 1 or names[0] not in PROFILED:
        sys.exit(f"--profile: give one --scenario of {', '.join(PROFILED)}")
    return names[0]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python bench/run.py", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scenario",
        type=_names(SCENARIOS),
        default=("all",),
        help="comma-separated scenario names, or all (default)",
    )
    parser.add_argument(
        "--systems",
        type=_names(SYSTEMS),
        default=None,
        help="only these systems (default: all the scenario measures)",
    )
    parser.add_argument(
        "--connections", type=_ints, default=(1, 8), help="connection counts, one row each (default 1,8)"
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        help=f"measured seconds per row (default 10; --quick {QUICK_SECONDS:g})",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help=f"warm-up seconds per row (default 2; --quick {QUICK_WARMUP:g})",
    )
    parser.add_argument(
        "--messages",
        type=int,
        default=2_000_000,
        help="at most this many measured messages per row (default 2,000,000)",
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_SECONDS:g} s rows after {QUICK_WARMUP:g} s warm-up"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run every row this many times, in rounds, and report the median (default 1)",
    )
    parser.add_argument(
        "--generator-processes",
        type=int,
        default=None,
        help="load generator processes (default: one per 8 connections)",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--engine-root",
        type=Path,
        default=ROOT,
        help="folder holding the engine/ package to run (default: this work tree)",
    )
    source.add_argument(
        "--engine-rev",
        help="run the engine of this git revision instead (extracted with git archive to a temp folder)",
    )
    parser.add_argument(
        "--data-root",
        type=Path,
        default=Path(tempfile.gettempdir()),
        help="where each row's fresh work folder and store go",
    )
    parser.add_argument(
        "--output", type=Path, default=ROOT / "bench" / "results", help="where latest.md and latest.json go"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        help="before each row, wait up to this many seconds for other CPU use to drop"
        " (default 30; 0: do not wait)",
    )
    parser.add_argument(
        "--drain-seconds",
        type=float,
        default=60.0,
        help="end-to-end and patient-record: after the load, wait up to this long for the engine"
        " to deliver what it queued (default 60)",
    )
    parser.add_argument(
        "--prefill-messages",
        type=int,
        default=1_000_000,
        help="large-store: messages in the pre-filled store (default 1,000,000)",
    )
    parser.add_argument(
        "--prefill-queued",
        type=int,
        default=100_000,
        help="large-store: of those, queued for the destination that is down (default 100,000)",
    )
    parser.add_argument(
        "--postgres",
        default="postgresql://postgres@127.0.0.1:5432",
        help="postgresql: the server each row creates its database on (default postgresql://postgres@127.0.0.1:5432)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep each row's work folder (config, store, server log)"
    )
    parser.add_argument(
        "--profile",
        choices=["py-spy", "cprofile"],
        help="profile the engine once under the load of one --scenario (intake, end-to-end,"
        " patient-record, postgresql: its intake, or postgresql,end-to-end; default intake),"
        " at the largest --connections, instead",
    )
    parser.add_argument("--list", action="store_true", help="list the scenarios and systems and exit")
    args = parser.parse_args(argv)
    args.seconds = args.seconds if args.seconds is not None else (QUICK_SECONDS if args.quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (QUICK_WARMUP if args.quick else 2.0)
    if (
        args.seconds <= 0
        or args.seconds > 600
        or args.warmup < 0
        or args.warmup > 60
        or args.messages < 1
        or not 1 <= args.repeat <= 10
    ):
        parser.error(
            "--seconds must be in (0, 600], --warmup in [0, 60], --messages at least 1, --repeat 1..10"
        )
    if (
        not 0 <= args.drain_seconds <= 600
        or not 1 <= args.prefill_messages <= 10_000_000
        or not 0 <= args.prefill_queued <= args.prefill_messages
    ):
        parser.error(
            "--drain-seconds must be in [0, 600], --prefill-messages 1..10,000,000,"
            " --prefill-queued 0..--prefill-messages"
        )
    return args


def _git(root: Path, *args: str) -> str | None:
    """Read-only git query (no index refresh written); None when root is no git work tree."""
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
        )
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def engine_context(args: argparse.Namespace, scratch: Path) -> RunContext:
    """Which engine the rows run: a work tree as it is, or a revision extracted from git."""
    if args.engine_rev:
        commit = _git(ROOT, "rev-parse", "--short", args.engine_rev)
        if commit is None:
            sys.exit(f"--engine-rev: git does not know {args.engine_rev!r}")
        target = scratch / f"engine-{commit}"
        archive = scratch / f"engine-{commit}.tar"
        subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--output", str(archive), commit], check=True, timeout=120
        )
        with tarfile.open(archive) as tar:
            tar.extractall(target, filter="data")
        return RunContext(target, f"git revision {commit}")
    root = args.engine_root.resolve()
    if not (root / "engine" / "__main__.py").exists():
        sys.exit(f"--engine-root: {root} has no engine/ package")
    commit = _git(root, "rev-parse", "--short", "HEAD")
    if commit is None:
        return RunContext(root, f"{root} (not a git work tree)")
    dirty = _git(root, "status", "--porcelain", "--", "engine")
    return RunContext(
        root, f"work tree at {commit}" + (", with uncommitted changes in engine/" if dirty else "")
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.list:
        for scenario in SCENARIOS.values():
            print(
                f"{scenario.name:15} {scenario.title}"
                + (f"  [not available yet: {scenario.pending}]" if scenario.pending else "")
            )
        print()
        for system in SYSTEMS.values():
            print(f"{system.name:18} {system.label}")
        return 0
    scenarios = list(SCENARIOS.values()) if "all" in args.scenario else [SCENARIOS[n] for n in args.scenario]
    options = Options(
        connections=args.connections,
        seconds=args.seconds,
        warmup_seconds=args.warmup,
        max_messages=args.messages,
        generator_processes=args.generator_processes,
        systems=args.systems,
        data_root=args.data_root,
        tag=default_tag(),
        keep_workdirs=args.keep,
        quiet_wait_seconds=args.quiet_wait,
        repeat=args.repeat,
        drain_seconds=args.drain_seconds,
        prefill_messages=args.prefill_messages,
        prefill_queued=args.prefill_queued,
        postgres_server=args.postgres,
    )
    args.data_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-engine-", dir=args.data_root) as scratch:
        context = engine_context(args, Path(scratch))
        if args.profile:
            from bench.profiling import profile

            path = profile(
                args.profile,
                profiled_scenario(args.scenario),
                max(args.connections),
                options,
                context,
                args.output,
            )
            print(path.read_text())
            print(f"written: {path}")
            return 0
        started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        results = {}
        for scenario in scenarios:
            if scenario.pending:
                print(f"{scenario.name}: not available yet: {scenario.pending}")
                continue
            print(f"{scenario.name}: {scenario.title}")
            results[scenario.name] = scenario.run(scenario, options, context)
    versions: dict[str, str] = {}
    for rows in results.values():
        for name in {row.system for row in rows}:
            versions.update(SYSTEMS[name].versions(context))
    meta = {
        "started": started,
        "command": "python bench/run.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "options": {
            "connections": list(options.connections),
            "seconds": options.seconds,
            "warmup_seconds": options.warmup_seconds,
            "max_messages": options.max_messages,
            "repeat": options.repeat,
            "generator_processes": options.generator_processes or "one per 8 connections",
            "drain_seconds": options.drain_seconds,
            "prefill_messages": options.prefill_messages,
            "prefill_queued": options.prefill_queued,
        },
        "machine": procstats.machine(args.data_root),
        "python": platform.python_version(),
        "node": deps.node_version(),
        "versions": versions,
        "engine_source": context.engine_source,
    }
    text = report.render(results, scenarios, meta)
    print()
    print(text)
    markdown, document = report.write(args.output, text, results, scenarios, meta)
    print(f"written: {markdown}, {document}")
    failed = [row for rows in results.values() for row in rows if row.status == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
