"""The ``python`` transform: the escape hatch for changes no other transform makes.

It names ``package.module:function``, resolved when the channel is built. The module is imported
once, and run again from its file when that file's content changed since (a reload applies an
edited module): the module is run afresh as a new module object, so a channel built before keeps
the functions it had until a reload replaces the channel.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from engine.errors import ConfigError, TransformError
from engine.hl7.message import Message
from engine.transforms.inputs import InputFile, sha256_of
from engine.transforms.step import Step

__all__ = ["Python", "Target", "import_target", "importing_from"]

# Module name -> SHA-256 of the source the module in sys.modules was run from, for the modules
# a python: target named. sys.modules is process-wide, and so is what it was run from.
_run_from: dict[str, str] = {}


class Python(Step):
    """The escape hatch: ``package.module:function``, called as ``function(message) -> Message``.

    Whatever the function raises becomes a TransformError (the message goes to ERROR, the channel goes on).
    """

    __slots__ = ("_function", "_target")

    def __init__(self, name: str, target: str, tables):
        super().__init__(name, f"python {target}")
        self._target = target
        try:
            self._function = import_target(target).function
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


@dataclass(frozen=True, slots=True)
class Target:
    """What a ``python:`` target names: the callable, and the module file it comes from."""

    function: Callable[[Message], Message]
    source: InputFile | None  # None for a module without a source file of its own (built in, zipped...)


@contextmanager
def importing_from(folder: Path) -> Iterator[None]:
    """While inside, modules import from ``folder`` first: a config's folder, for its ``python:`` modules.

    Only while a config is loaded: its modules are imported then, and stay in ``sys.modules``.
    """
    entry = str(folder)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        sys.path.remove(entry)  # the one inserted above (the first equal entry)


def import_target(target: str) -> Target:
    """The callable ``package.module:function`` names, from its module as its file is now.

    ValueError saying why when there is none.
    """
    module_name, _, attribute = target.partition(":")
    try:
        found, source = _current_module(module_name)
    except Exception as exc:  # noqa: BLE001 - importing runs arbitrary code; any failure is a config problem
        raise ValueError(f"cannot import {module_name}: {type(exc).__name__}: {exc}") from None
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ValueError(f"{module_name} has no {attribute}") from None
    if not callable(found):
        raise ValueError(f"{target} is not callable (it is a {type(found).__name__})")
    return Target(found, source)


def _current_module(name: str) -> tuple[ModuleType, InputFile | None]:
    """The module imported, or run again from its file when the file changed since it was run."""
    module = importlib.import_module(name)
    spec = module.__spec__
    if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
        return module, None  # built in, frozen, in a zip or only bytecode: no source file to compare
    source = Path(spec.origin).read_bytes()
    digest = sha256_of(source)
    if _run_from.setdefault(name, digest) != digest:
        module = _run_afresh(module, source)
        _run_from[name] = digest
    return module, InputFile("module", name, spec.origin, digest)


def _run_afresh(old: ModuleType, source: bytes) -> ModuleType:
    """A new module object in ``old``'s place, run from ``source`` (the bytes hashed, not a cached .pyc)."""
    spec = old.__spec__
    module = importlib.util.module_from_spec(spec)
    code = compile(source, spec.origin, "exec", dont_inherit=True)
    sys.modules[spec.name] = module
    try:
        exec(code, module.__dict__)  # noqa: S102 - the module the configuration names, as import would
    except BaseException:
        sys.modules[spec.name] = old  # a module that fails leaves the one that worked in place
        raise
    parent, _, child = spec.name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)
    return module
