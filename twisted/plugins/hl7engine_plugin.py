"""``twistd hl7engine -c channels.yaml``: the engine as a twistd application.

twistd then owns the process (daemonizing, its pid file, logging, ``--reactor``); the engine runs
in one process with every role, like ``hl7engine run --workers 0``, and holds its data folder's
lock as ``hl7engine run`` does. This folder has no ``__init__.py``: it is part of Twisted's
``twisted.plugins`` namespace, where twistd looks for plugins.
"""

from __future__ import annotations

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

        from engine.cli.app import load_config_or_exit
        from engine.cli.running import hold_data_folder
        from engine.service import Engine

        config = load_config_or_exit(options["config"])
        engine = Engine(config, reactor)
        self.data_folder_lock = hold_data_folder(config.engine.data_dir)  # held while the process lives
        return engine


service_maker = EngineServiceMaker()
