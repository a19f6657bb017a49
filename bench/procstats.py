"""What a server process cost, read from /proc (Linux), and what machine the figures come from."""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and all its threads so far, with its running child processes.

    The children count for the engine's worker processes (``run --workers``, ``--intake-processes``).
    """
    total = cpu_seconds_of(Path(f"/proc/{pid}/stat"))
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or entry.name == str(pid):
            continue
        try:
            stat = (entry / "stat").read_text()
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:  # field 4: the parent's pid
                total += cpu_seconds_of(entry / "stat")
        except (FileNotFoundError, ProcessLookupError):  # it ended meanwhile
            continue
    return total


def cpu_seconds_of(stat_path: Path) -> float:
    """User + system CPU time in a /proc/.../stat file."""
    stat = stat_path.read_text()
    # The command name (field 2) may hold spaces and parentheses: count fields after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14 and 15)


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """User + system CPU time of each thread of a process so far, by thread id.

    The main thread's id is the pid.
    """
    times = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            times[int(task.name)] = cpu_seconds_of(task / "stat")
        except (FileNotFoundError, ProcessLookupError):  # the thread ended meanwhile
            continue
    return times


def peak_rss_bytes(pid: int) -> int:
    """The process's peak resident set size (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise LookupError(f"no VmHWM for process {pid}")


def machine(data_root: Path) -> dict:
    """CPU model, cores, memory, kernel, and the file system the stores write to."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
        platform.processor(),
    )
    meminfo = Path("/proc/meminfo").read_text()
    mem_kib = next(int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemTotal:"))
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "data_filesystem": _filesystem_of(data_root),
        "fsync_ms": fsync_ms(data_root),
    }


def fsync_ms(directory: Path, count: int = 50, budget_seconds: float = 2.0) -> float:
    """Median time of writing 4 KiB and fsyncing it in this folder.

    It is what durability: power_loss pays per commit.
    """
    times = []
    deadline = time.monotonic() + budget_seconds
    with tempfile.NamedTemporaryFile(dir=directory, prefix="bench-fsync-") as probe:
        for _ in range(count):
            started = time.perf_counter()
            probe.write(b"\0" * 4096)
            probe.flush()
            os.fsync(probe.fileno())
            times.append((time.perf_counter() - started) * 1000)
            if time.monotonic() > deadline:
                break
    return round(statistics.median(times), 3)


def _filesystem_of(path: Path) -> str:
    """'ext4 on /dev/vda' for the mount holding path (fsync costs depend on it)."""
    path = path.resolve()
    best = ("", "?", "?")
    for line in Path("/proc/mounts").read_text().splitlines():
        device, mount_point, fs_type = line.split()[:3]
        if (path == Path(mount_point) or Path(mount_point) in path.parents) and len(mount_point) >= len(
            best[0]
        ):
            best = (mount_point, fs_type, device)
    return f"{best[1]} on {best[2]} (mounted at {best[0]})"


def machine_busy_seconds() -> float:
    """CPU time all processes of the machine have used so far, over every core (from /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICKS


def wait_until_quiet(limit_percent: float, max_wait: float, step: float = 0.5) -> float:
    """Wait until the machine's CPU use over ``step`` seconds is under ``limit_percent`` of one core,
    for at most ``max_wait`` seconds; return the last use measured (percent of one core)."""
    deadline = time.monotonic() + max_wait
    while True:
        before = machine_busy_seconds()
        time.sleep(step)
        busy = 100 * (machine_busy_seconds() - before) / step
        if busy < limit_percent or time.monotonic() >= deadline:
            return busy
