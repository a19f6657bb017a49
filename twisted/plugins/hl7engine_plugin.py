"""``twistd hl7engine -c channels.yaml``: the engine as a twistd application.

twistd then owns the process (daemonizing, its pid file, logging, ``--reactor``); the engine runs
in one process with every role, like ``hl7engine run --workers 0``, and holds its data folder's
lock as ``hl7engine run`` does. Like ``hl7engine run`` it reloads its config on SIGHUP, and names
itself in ``<data_dir>/hl7engine.pid`` while it runs, so ``hl7engine reload`` finds it. This
folder has no ``__init__.py``: it is part of Twisted's ``twisted.plugins`` namespace, where twistd
looks for plugins.
"""

from __future__ import annotations

import os
from pathlib import Path

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from twisted.python import usage
from zope.interface import implementer


class Options(usage.Options):
    """The options of ``twistd hl7engine``."""

    optParameters = [["config", "c", "channels.yaml", "The channels.yaml to run."]]


@implementer(IServiceMaker, IPlugin)
class EngineServiceMaker:
    """Builds the engine's service from a channels.yaml."""

    tapname = "hl7engine"
    description = "The hl7engine HL7 v2 integration engine, on a channels.yaml."
    options = Options

    def makeService(self, options: Options):
        """The Engine of ``--config``; its problems printed and exit 2 when it is not valid."""
        from twisted.internet import reactor

        from engine.cli.app import PID_FILE, load_config_or_exit
        from engine.cli.running import hold_data_folder
        from engine.service import Engine

        config = load_config_or_exit(options["config"])
        engine = Engine(config, reactor)
        self.data_folder_lock = hold_data_folder(config.engine.data_dir)  # held while the process lives
        # Once the reactor runs: in the process that serves, after twistd daemonized.
        reactor.callWhenRunning(self._serve_reloads, reactor, engine, config.engine.data_dir / PID_FILE)
        return engine

    @staticmethod
    def _serve_reloads(reactor, engine, pid_file: Path) -> None:
        from engine.cli.running import reload_on_sighup

        reload_on_sighup(reactor, engine)
        pid_file.write_text(f"{os.getpid()}\n")
        reactor.addSystemEventTrigger("after", "shutdown", pid_file.unlink, missing_ok=True)


service_maker = EngineServiceMaker()
