"""Running the benchmark (bench/run.py) from a test, briefly, and reading its report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def brief(*, seconds: int, messages: int) -> list[str]:
    """Options of a brief run: one connection for ``seconds`` (after 0.2 s warm-up), at most ``messages``."""
    return [
        *("--connections", "1", "--seconds", str(seconds), "--warmup", "0.2"),
        *("--messages", str(messages), "--quiet-wait", "0"),
    ]


def run_report(arguments: list[str], data_root: Path, *, timeout: float) -> dict:
    """bench/run.py with ``arguments``, its data under ``data_root``; the report it wrote (latest.json).

    The report's files are in ``data_root / "out"``; a run that fails fails the test with its output.
    """
    argv = [
        sys.executable,
        "bench/run.py",
        *arguments,
        "--data-root",
        str(data_root),
        "--output",
        str(data_root / "out"),
    ]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((data_root / "out" / "latest.json").read_text())
