"""The file source: poll a directory, store each file's messages, move the file to done or error.

A file's messages and the record that the file was read (its name and SHA-256) are committed in
one transaction; the file is moved only after that. So a crash between the commit and the move
leaves a file that the next poll recognises and only moves: nothing is read twice, and because
files are taken oldest first and only moved after their commit, nothing is skipped either.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from twisted.application import service
from twisted.internet import defer, task, threads
from twisted.logger import Logger

from engine.model import SourceFile

log = Logger()


@dataclass(frozen=True, slots=True)
class _Found:
    path: Path
    data: bytes
    sha256: str


def _list_ready(directory: Path, pattern: str, min_age: float) -> list[Path]:
    """Files matching the pattern that nobody wrote to for min_age seconds, oldest first."""
    now = time.time()
    ready = []
    for path in directory.glob(pattern):
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        if path.is_file() and now - stat.st_mtime >= min_age:
            ready.append((stat.st_mtime, path.name, path))
    return [path for _, _, path in sorted(ready)]


def _read(path: Path) -> _Found:
    data = path.read_bytes()
    return _Found(path, data, hashlib.sha256(data).hexdigest())


def _move(path: Path, folder: Path) -> Path:
    """Move a file into folder atomically, never overwriting: name, name.1, name.2..."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    n = 0
    while target.exists():
        n += 1
        target = folder / f"{path.name}.{n}"
    os.replace(path, target)
    return target


class FileSource(service.Service):
    """Polls one directory for one listener of type file."""

    def __init__(self, name: str, settings, intake, store, *, reactor):
        self.setName(name)
        self.settings = settings
        self.intake = intake
        self.store = store
        self.reactor = reactor
        self._loop = task.LoopingCall(self.poll)
        self._loop.clock = reactor
        self._polling: defer.Deferred | None = None

    def startService(self) -> None:
        super().startService()
        for folder in (self.settings.directory, self.settings.done_directory, self.settings.error_directory):
            folder.mkdir(parents=True, exist_ok=True)
        self._loop.start(self.settings.poll_seconds, now=True)

    @defer.inlineCallbacks
    def stopService(self):
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        if self._polling is not None and not self._polling.called:
            yield self._polling

    def poll(self) -> defer.Deferred:
        """Take every ready file once, in order; errors are logged and the next poll tries again."""
        if self._polling is not None and not self._polling.called:
            return self._polling
        self._polling = self._poll()
        self._polling.addErrback(
            lambda failure: log.failure("file source {name}: poll failed", failure, name=self.name)
        )
        return self._polling

    @defer.inlineCallbacks
    def _poll(self):
        s = self.settings
        paths = yield self._in_thread(_list_ready, s.directory, s.pattern, s.min_age_seconds)
        for path in paths:
            if not self.running:
                return
            found = yield self._in_thread(_read, path)
            seen = yield self.store.file_already_read(found.sha256)
            if seen:
                # Stored before a crash that came before the move: finish the move only.
                yield self._in_thread(_move, path, s.done_directory)
                continue
            clean = yield self.intake.ingest_file(
                found.data, SourceFile(str(path), found.sha256, len(found.data)), peer=f"file:{path}"
            )
            target = s.done_directory if clean else s.error_directory
            moved = yield self._in_thread(_move, path, target)
            log.info(
                "file source {name}: {file} stored, moved to {folder}",
                name=self.name,
                file=path.name,
                folder=moved.parent,
            )

    def _in_thread(self, func, *args):
        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), func, *args)
