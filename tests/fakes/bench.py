"""Running the benchmark (bench/run.py) from a test, briefly, and reading its report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


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
