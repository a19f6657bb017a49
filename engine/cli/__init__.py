"""The ``hl7engine`` command.

``main`` is the Click group (``engine.cli.app``). Each command is defined in a module of this
package and listed in ``COMMANDS``, one line a command: its module is imported only when the command
runs, so a command on the store starts without Twisted or the channels. To add a command, define it
with ``@click.command()`` (or ``@click.group()``) in a module here and add its line below.
"""

from engine.cli.app import main

COMMANDS = {
    "run": "engine.cli.running:run",
    "reload": "engine.cli.running:reload",
    "check": "engine.cli.running:check",
    "healthcheck": "engine.cli.health:healthcheck",
    "hash-password": "engine.cli.running:hash_password",
    "send": "engine.cli.send:send",
    "messages": "engine.cli.messages:messages",
    "resend": "engine.cli.messages:resend",
    "reprocess": "engine.cli.messages:reprocess",
    "nodes": "engine.cli.nodes:nodes",
    "try": "engine.cli.trying:try_channel",
    "demo": "engine.cli.demo:demo",
    "validate": "engine.cli.validate:validate_command",
    "convert": "engine.cli.convert:convert_command",
    "channel": "engine.cli.channels:channel",
    "patient": "engine.cli.patients:patient",
    "prune": "engine.cli.maintenance:prune",
    "backup": "engine.cli.maintenance:backup",
    "rekey": "engine.cli.maintenance:rekey",
    "new-key": "engine.cli.maintenance:new_key",
}
main.add_lazy(COMMANDS)

__all__ = ["COMMANDS", "main"]
