"""Profile the engine under a scenario's load: where does a message's time go?

The loads: intake, end to end, patient record, intake on PostgreSQL.

``py-spy`` (installed into bench/.deps by the benchmark) samples every thread of the running
engine from outside, so the reactor thread and the store's writer thread both show; ``cProfile``
(the engine run as ``python -m cProfile -o ... -m engine run``) counts every call, but only on
the reactor thread, and slows the engine down more. Either writes a summary to
``<output>/profile-<tool>.md`` (``profile-<tool>-<scenario>.md`` for a scenario other than intake)
and keeps the raw output beside it (not committed).
"""

from __future__ import annotations

import io
import pstats
import re
import subprocess
from collections import Counter
from dataclasses import replace
from pathlib import Path

from bench import deps, end_to_end, patient_record, postgresql, procstats, realistic
from bench.harness import Options, measure
from bench.systems import SYSTEMS, RunContext

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


# The scenarios a profile can be taken of: each runs one engine row with an on_window hook.
PROFILED = {
    "intake": lambda engine, connections, options, context, hook: measure(
        "intake", engine, connections, options, context, on_window=hook
    ),
    "end-to-end": lambda engine, connections, options, context, hook: end_to_end.measure_row(
        "end-to-end", engine, connections, options, context, on_window=hook
    ),
    "patient-record": lambda engine, connections, options, context, hook: patient_record.measure_row(
        "patient-record", engine, connections, options, context, on_window=hook
    ),
    # Intake with the store on PostgreSQL (a database of its own, dropped afterwards).
    "postgresql": lambda engine, connections, options, context, hook: postgresql.intake_row(
        "postgresql", engine, connections, options, context, on_window=hook
    ),
    # End to end with the store on PostgreSQL.
    "postgresql-end-to-end": lambda engine, connections, options, context, hook: postgresql.end_to_end_row(
        "postgresql", engine, connections, options, context, on_window=hook
    ),
    # Every message to an mllp partner, the patient record and an archive file.
    "realistic": lambda engine, connections, options, context, hook: realistic.measure_row(
        "realistic", engine, connections, options, context, on_window=hook
    ),
}


def profile(
    tool: str,
    scenario: str,
    connections: int,
    options: Options,
    context: RunContext,
    output: Path,
    progress=print,
) -> Path:
    """Run the engine's row of ``scenario`` at this connection count under the profiler.

    ``scenario`` is a key of PROFILED. Returns the summary's path.
    """
    output.mkdir(parents=True, exist_ok=True)
    suffix = "" if scenario == "intake" else f"-{scenario}"
    summary_path = output / f"profile-{tool}{suffix}.md"
    engine = SYSTEMS["engine"]
    threads: dict[str, dict[int, float]] = {}
    recorder: list[subprocess.Popen] = []
    if tool == "cprofile":
        raw = (output / f"profile-cprofile{suffix}.prof").resolve()
        context = replace(context, engine_python_args=["-m", "cProfile", "-o", str(raw)])
    else:
        binary, problem = deps.py_spy()
        if problem:
            raise RuntimeError(problem)
        raw = (output / f"profile-py-spy{suffix}.raw").resolve()

    def window(phase, server):
        threads[phase] = procstats.thread_cpu_seconds(server.pid)
        if tool == "py-spy" and phase == "start":
            # --gil: only samples of the thread holding the GIL, i.e. what occupies the one core
            # Python code can use.
            argv = [
                str(binary),
                "record",
                "--pid",
                str(server.pid),
                "--duration",
                str(max(1, int(options.seconds))),
                "--rate",
                "100",
                "--format",
                "raw",
                "--threads",
                "--gil",
                "--output",
                str(raw),
            ]
            recorder.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        elif phase == "end" and recorder:
            try:
                recorder[0].wait(timeout=options.seconds + 30)
            except subprocess.TimeoutExpired:
                recorder[0].kill()
                recorder[0].wait(timeout=10)

    progress(f"  engine under {tool}, {scenario}, {connections} connection(s) ...")
    row = PROFILED[scenario](engine, connections, options, context, window)
    if tool == "cprofile":
        body = _summarise_cprofile(raw) if raw.exists() else f"cProfile wrote nothing ({row.reason})"
    else:
        stderr = recorder[0].stderr.read().decode(errors="replace").strip() if recorder else ""
        body = (
            _summarise_py_spy(raw)
            if raw.exists() and raw.stat().st_size
            else f"py-spy wrote nothing: {stderr or row.reason}"
        )
    head = (
        f"# Engine profile ({tool}), {scenario}, {connections} connection(s)\n\n"
        f"Engine: {context.engine_source}. Load: {row.rate:,.0f} msg/s, p99 {row.p99_ms or 0:.2f} ms,"
        f" {row.errors} error(s), server CPU {row.server_cpu_percent:.0f}% of one core"
        f" ({row.server_cpu_us_per_message or 0:,.0f} µs/msg)"
        f" while profiled (the profiler slows the engine down). Raw output: {raw.name}.\n\n"
        f"{_thread_split(threads, row.seconds)}\n\n"
    )
    summary_path.write_text(head + body + "\n")
    return summary_path


def _thread_split(threads: dict[str, dict[int, float]], seconds: float) -> str:
    """CPU of each engine thread over the window (from /proc), the main (reactor) thread first."""
    if "start" not in threads or "end" not in threads or seconds <= 0:
        return "Per-thread CPU: not measured."
    start, end = threads["start"], threads["end"]
    main = min(end)  # the main thread's id is the process id, the smallest
    used = {tid: end[tid] - start.get(tid, 0.0) for tid in end}
    parts = [f"main (reactor) thread {100 * used.pop(main, 0.0) / seconds:.0f}%"]
    parts += [
        f"thread {tid} {100 * cpu / seconds:.0f}%"
        for tid, cpu in sorted(used.items(), key=lambda item: -item[1])
        if cpu / seconds >= 0.01
    ]
    return "Per-thread CPU over the window, % of one core (/proc/<pid>/task): " + ", ".join(parts) + "."


def _parse_frame(frame: str) -> tuple[str, str]:
    """('function', 'file') from a py-spy frame 'function (file:line)'."""
    found = _FRAME.match(frame)
    return (found["function"], found["file"]) if found else (frame, "")


def _area(file: str) -> str:
    """A coarse owner of a file: engine/store, twisted/internet, sqlalchemy, sqlite3, ..."""
    if not file:  # a frame py-spy could not place (native code)
        return "?"
    parts = Path(file).with_suffix("").parts
    if parts[0] == "engine":
        return "/".join(parts[:2]) if len(parts) > 2 else parts[0]
    if parts[0] in ("twisted", "sqlalchemy"):
        return ".".join(parts[:2])
    return parts[0]


def _summarise_py_spy(raw: Path, top: int = 25) -> str:
    """Shares of the samples per thread, per area and per function (own time).

    Also per function inside each thread.
    """
    threads: Counter[str] = Counter()
    own: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    inclusive: dict[str, Counter[str]] = {}
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        frames = stack.split(";")
        # py-spy --threads puts "thread (0x7f...): name" first; the name is what reads well.
        thread, frames = frames[0].rpartition(": ")[2], frames[1:]
        total += samples
        threads[thread] += samples
        if not frames:
            continue
        function, file = _parse_frame(frames[-1])
        own[f"{function} ({file})"] += samples
        areas[_area(file)] += samples
        per_thread = inclusive.setdefault(thread, Counter())
        for name in {f"{fn} ({fl})" for fn, fl in map(_parse_frame, frames)}:
            per_thread[name] += samples
    if not total:
        return "no samples"

    def table(title: str, counter: Counter[str], n: int, skip_above: int | None = None) -> list[str]:
        rows = [f"### {title}", "", "| % of all samples | where |", "|--:|---|"]
        chosen = [(name, c) for name, c in counter.most_common() if skip_above is None or c < skip_above][:n]
        rows += [f"| {100 * c / total:.1f} | `{name}` |" for name, c in chosen]
        return rows + [""]

    out = [
        f"{total:,} samples at 100 Hz of the thread holding the GIL (py-spy --gil): Python work on the"
        " one core the engine's Python code can use. C code that releases the GIL (SQLite executing and"
        " committing, socket sends, epoll waits) is not in them; it shows in the per-thread CPU above.",
        "",
    ]
    out += table("Threads", threads, 10)
    out += table("Areas (file of the innermost frame)", areas, 15)
    out += table("Functions by own time (innermost frame)", own, top)
    for thread, counter in sorted(inclusive.items(), key=lambda item: -threads[item[0]]):
        # Frames on (nearly) every sample of the thread are its entry points (runpy, click, the reactor loop).
        out += table(
            f"Thread {thread}: functions by inclusive time, below its entry points",
            counter,
            top,
            skip_above=int(threads[thread] * 0.95),
        )
    return "\n".join(out)


def _summarise_cprofile(raw: Path, top: int = 30) -> str:
    out = []
    for key, title in (("tottime", "own time"), ("cumulative", "cumulative time")):
        stream = io.StringIO()
        pstats.Stats(str(raw), stream=stream).strip_dirs().sort_stats(key).print_stats(top)
        out += [f"### Reactor thread, by {title}", "", "```", stream.getvalue().strip(), "```", ""]
    return "\n".join(out)
