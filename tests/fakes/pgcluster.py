"""A private PostgreSQL cluster in a temporary folder, to crash without disturbing the shared test server."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.fakes.harness import free_port

_START_SECONDS = 20


def unavailable() -> str | None:
    """Why no private cluster can be run here (no binaries, root without a postgres user), or None."""
    if _bin_dir() is None:
        return "no PostgreSQL server binaries (/usr/lib/postgresql/*/bin/pg_ctl)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user to run the server as"
    return None


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


class PrivateCluster:
    """initdb'd in a temp folder, listening on 127.0.0.1 on a free port; start(), stop(mode), remove().

    ``settings`` are server settings (``-c name=value``) for every start.
    """

    def __init__(self, settings: dict[str, str] | None = None):
        self._bin = _bin_dir()
        self._root = Path(tempfile.mkdtemp(prefix="hl7engine-pg-"))
        self._data = self._root / "data"
        self.port = free_port()
        self._settings = {"listen_addresses": "127.0.0.1", **(settings or {})}
        self._user: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            self._user = ["runuser", "-u", "postgres", "--"]
            account = pwd.getpwnam("postgres")
            os.chown(self._root, account.pw_uid, account.pw_gid)
        self._run("initdb", "-D", str(self._data), "-U", "postgres", "-A", "trust", "--no-sync")

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of its ``postgres`` database."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def log(self) -> str:
        """The server's log so far (for failure messages)."""
        path = self._root / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> None:
        """Start the server and wait until it accepts connections (after crash recovery, if any)."""
        options = " ".join(f"-c {name}={value}" for name, value in self._settings.items())
        options += f" -p {self.port} -k {self._root}"
        self._run(
            "pg_ctl", "-D", str(self._data), "-l", str(self._root / "server.log"),
            "-w", "-t", str(_START_SECONDS), "-o", options, "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m mode``: ``immediate`` ends every server process at once, as a crash does."""
        self._run("pg_ctl", "-D", str(self._data), "-w", "-t", str(_START_SECONDS), "-m", mode, "stop")

    def remove(self) -> None:
        """Stop the server if it runs (immediately) and delete the folder."""
        if (self._data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self._data), "-m", "immediate", "stop", check=False)
        shutil.rmtree(self._root, ignore_errors=True)

    def _run(self, program: str, *arguments: str, check: bool = True) -> None:
        done = subprocess.run(
            [*self._user, str(self._bin / program), *arguments],
            capture_output=True,
            text=True,
            timeout=_START_SECONDS + 10,
            cwd=self._root,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stdout}{done.stderr}{self.log}")
