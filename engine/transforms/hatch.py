"""The ``python`` transform: the escape hatch for changes no other transform makes.

It names ``package.module:function``, imported once when the channel is built.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from engine.errors import ConfigError, TransformError
from engine.hl7.message import Message
from engine.transforms.step import Step

__all__ = ["Python", "import_target"]


class Python(Step):
    """The escape hatch: ``package.module:function``, called as ``function(message) -> Message``.

    Whatever the function raises becomes a TransformError (the message goes to ERROR, the channel goes on).
    """

    __slots__ = ("_function", "_target")

    def __init__(self, name: str, target: str, tables):
        super().__init__(name, f"python {target}")
        self._target = target
        try:
            self._function = import_target(target)
        except ValueError as exc:
            raise ConfigError([f"{name}.python: {exc}"]) from None

    def apply(self, message: Message) -> Message:
        try:
            result = self._function(message)
        except TransformError as exc:  # the function's own reason, named after this transform
            raise self.error(str(exc)) from exc
        except Exception as exc:  # the hatch runs code we do not control; it must not stop the channel
            raise self.error(f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(result, Message):
            raise self.error(f"returned {type(result).__name__}, not a Message")
        return result


def import_target(target: str) -> Callable[[Message], Message]:
    """The callable ``package.module:function`` names; ValueError saying why when there is none."""
    module_name, _, attribute = target.partition(":")
    try:
        found = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - importing runs arbitrary code; any failure is a config problem
        raise ValueError(f"cannot import {module_name}: {type(exc).__name__}: {exc}") from None
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ValueError(f"{module_name} has no {attribute}") from None
    if not callable(found):
        raise ValueError(f"{target} is not callable (it is a {type(found).__name__})")
    return found
