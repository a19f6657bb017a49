"""The file source: poll a directory, store each file's messages, move the file to done or error.

A file's messages and the record of the file (its path, size, modification time and SHA-256) are
committed in one transaction; the file is moved only after that, and the record then says where
it went. So a crash between the commit and the move leaves a file whose record is not marked
moved: the next poll recognises it by path, size and modification time and only moves it. Any
other file is read, even one with the same name or content as a file read before: a sender that
drops a batch again means it. Files are taken oldest first and moved only after their commit, so
nothing is skipped either.

Each file taken is logged by name (never its content) and reported to the observer as a
``file_taken`` event with its outcome: ``done``, ``error`` (a message was rejected),
``recovered`` (stored before a crash, only moved now) or ``failed`` (left for the next poll).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from twisted.application import service
from twisted.internet import defer, task, threads
from twisted.logger import Logger

from engine.model import SourceFile

log = Logger()

# What the log says became of a file, by outcome.
_TAKEN = {
    "done": "stored, moved to {folder}",
    "error": "stored with a rejected message, moved to {folder}",
    "recovered": "was stored before a restart: moved to {folder} without reading it again",
}


@dataclass(frozen=True, slots=True)
class _Ready:
    """A file nobody wrote to for min_age seconds, as listed."""

    path: Path
    size: int
    modified_ns: int


def _list_ready(directory: Path, pattern: str, min_age: float) -> list[_Ready]:
    """Files matching the pattern that nobody wrote to for min_age seconds, oldest first."""
    now = time.time()
    ready = []
    for path in directory.glob(pattern):
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        if path.is_file() and now - stat.st_mtime >= min_age:
            ready.append((stat.st_mtime_ns, path.name, _Ready(path, stat.st_size, stat.st_mtime_ns)))
    return [found for _, _, found in sorted(ready)]


def _read(path: Path) -> tuple[bytes, SourceFile]:
    """The file's bytes and its record, size and modification time from the same open file."""
    with open(path, "rb") as file:
        data = file.read()
        stat = os.fstat(file.fileno())
    return data, SourceFile(str(path), hashlib.sha256(data).hexdigest(), len(data), stat.st_mtime_ns)


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

    def __init__(
        self,
        name: str,
        settings,
        intake,
        store,
        *,
        reactor,
        observer: Callable[[str, dict], None] | None = None,
    ):
        self.setName(name)
        self.settings = settings
        self.intake = intake
        self.store = store
        self.reactor = reactor
        self._observe = observer or (lambda event, fields: None)
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
        found = yield self._in_thread(_list_ready, s.directory, s.pattern, s.min_age_seconds)
        for ready in found:
            if not self.running:
                return
            try:
                outcome, moved = yield self._take(ready)
            except Exception as error:  # noqa: BLE001 - any failure leaves the file, in order, for the next poll
                self._taken(ready.path, "failed", f"left for the next poll: {error}", log.warn)
                return
            self._taken(ready.path, outcome, _TAKEN[outcome].format(folder=moved.parent), log.info)

    @defer.inlineCallbacks
    def _take(self, ready: _Ready):
        """Store one file (unless it was stored before a crash) and move it; fires (outcome, new path)."""
        s = self.settings
        key = (str(ready.path), ready.size, ready.modified_ns)
        if (yield self.store.unmoved_file(*key)):
            outcome, folder = "recovered", s.done_directory
        else:
            data, source_file = yield self._in_thread(_read, ready.path)
            key = (source_file.path, source_file.size, source_file.modified_ns)
            clean = yield self.intake.ingest_file(data, source_file, peer=f"file:{ready.path}")
            outcome, folder = ("done", s.done_directory) if clean else ("error", s.error_directory)
        moved = yield self._in_thread(_move, ready.path, folder)
        try:
            yield self.store.file_moved(*key, str(moved))
        except Exception as error:  # noqa: BLE001 - the file is safe where it is; only its record lags
            log.warn(
                "file source {name}: {file} moved, but the store could not record it: {error}",
                name=self.name,
                file=ready.path.name,
                error=str(error),
            )
        return outcome, moved

    def _taken(self, path: Path, outcome: str, what: str, emit) -> None:
        """Log and report what became of one file (its name only: the content is patient data)."""
        emit(
            "file source {name}: {file} {what}",
            name=self.name,
            file=path.name,
            outcome=outcome,
            what=what,
        )
        self._observe("file_taken", {"listener": self.name, "outcome": outcome})

    def _in_thread(self, func, *args):
        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), func, *args)
