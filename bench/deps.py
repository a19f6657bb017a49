"""The benchmark's own set-up: baseline packages installed into bench-local folders, never the project's.

Python baselines go to ``bench/.deps/python`` (``pip install --no-deps --target``, from
``requirements-baselines.txt``); Node.js baselines to ``bench/node/node_modules`` (``npm ci``
from the committed ``package-lock.json``). Each is installed once, again only when its
requirement file changes. A step that cannot be done returns the reason, and the rows that need
it are reported as unavailable with that reason instead of failing the whole run.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

BENCH = Path(__file__).resolve().parent
PYTHON_DEPS = BENCH / ".deps" / "python"
NODE_DIR = BENCH / "node"
REQUIREMENTS = BENCH / "requirements-baselines.txt"
PY_SPY = "py-spy==0.4.3"
_INSTALL_TIMEOUT = 600


def _stamp_matches(stamp: Path, text: str) -> bool:
    return stamp.exists() and stamp.read_text() == hashlib.sha256(text.encode()).hexdigest()


def _write_stamp(stamp: Path, text: str) -> None:
    stamp.write_text(hashlib.sha256(text.encode()).hexdigest())


def _run(argv: list[str], what: str, cwd: Path | None = None) -> str | None:
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=_INSTALL_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{what} failed: {exc}"
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return f"{what} failed: {' / '.join(tail)}"
    return None


def _pip_target(requirements: list[str], stamp_name: str) -> str | None:
    """Install requirement lines into bench/.deps/python unless already there."""
    text = "\n".join(requirements)
    stamp = PYTHON_DEPS / f".{stamp_name}.installed"
    if _stamp_matches(stamp, text):
        return None
    PYTHON_DEPS.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-deps",
        "--upgrade",
        "--target",
        str(PYTHON_DEPS),
        *requirements,
    ]
    problem = _run(argv, f"pip install {' '.join(requirements)}")
    if problem is None:
        _write_stamp(stamp, text)
    return problem


def python_baselines() -> str | None:
    """Install txHL7 (and six) into bench/.deps/python; the reason when it cannot be done."""
    lines = [
        line.strip()
        for line in REQUIREMENTS.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return _pip_target(lines, "baselines")


def py_spy() -> tuple[Path | None, str | None]:
    """py-spy for --profile, installed into bench/.deps/python; (its path, None) or (None, reason)."""
    problem = _pip_target([PY_SPY], "py-spy")
    binary = PYTHON_DEPS / "bin" / "py-spy"
    if problem is None and not binary.exists():
        problem = f"{PY_SPY} installed no bin/py-spy"
    return (None, problem) if problem else (binary, None)


def node_baselines() -> str | None:
    """``npm ci`` into bench/node from the committed lock file; the reason when it cannot be done."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node and npm are not on PATH"
    lock = NODE_DIR / "package-lock.json"
    stamp = NODE_DIR / "node_modules" / ".bench-installed"
    if _stamp_matches(stamp, lock.read_text()):
        return None
    problem = _run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], "npm ci in bench/node", cwd=NODE_DIR
    )
    if problem is None:
        _write_stamp(stamp, lock.read_text())
    return problem


def python_package_version(name: str, *, bench_local: bool = False) -> str:
    """Installed version of a distribution, from bench/.deps/python when bench_local."""
    try:
        if bench_local:
            found = next(iter(metadata.distributions(name=name, path=[str(PYTHON_DEPS)])), None)
            return found.version if found else "not installed"
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def node_package_version(name: str) -> str:
    """Installed version of a package in bench/node/node_modules."""
    manifest = NODE_DIR / "node_modules" / name / "package.json"
    return json.loads(manifest.read_text())["version"] if manifest.exists() else "not installed"


def node_version() -> str:
    """``node --version``, or why there is none."""
    node = shutil.which("node")
    if node is None:
        return "not installed"
    return subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
