"""Transforms: the changes a channel makes to a message, in order; one that fails raises TransformError.

Every transform is built once from its spec (paths parsed, regular expressions compiled, tables
and Python functions resolved) and then only reads and writes the message through
``Message.get`` and ``Message.set`` (values are unescaped when read and escaped when written).
Three kinds of change have no ``Message`` method and rebuild the message from its segment texts
instead: replacing a whole field with all its repetitions (``delete``, ``split``, ``join``,
``copy`` of a composite value), and adding, removing or renaming segments.

This module builds and checks them; the steps are ``values`` (one value at a time),
``structure`` (fields and segments) and ``hatch`` (the ``python`` transform), on ``step``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from engine.transforms import hatch, structure, values, xml
from engine.transforms.lookup import LookupTable
from engine.transforms.spec import TransformSpec
from engine.transforms.stages import Transform
from engine.transforms.step import Step

__all__ = ["build_transforms", "check_transforms"]

Problem = tuple[tuple, str]


def build_transforms(
    specs: Sequence[TransformSpec], *, path: str, tables: Mapping[str, LookupTable]
) -> list[Transform]:
    """One Transform per spec, named by its YAML path ``f"{path}[{i}]"``.

    Expects specs that passed ``check_transforms``; otherwise raises ConfigError.
    """
    return [
        _BUILDERS[spec.kind](f"{path}[{index}]", spec.options, tables) for index, spec in enumerate(specs)
    ]


def check_transforms(
    specs: Sequence[TransformSpec], *, path_loc: tuple, table_names: set[str]
) -> list[Problem]:
    """Problems between transforms and the rest of the config: unknown tables, Python targets that fail."""
    problems: list[Problem] = []
    known = ", ".join(sorted(table_names)) or "(none)"
    for index, spec in enumerate(specs):
        if spec.kind == "map" and spec.map_.table not in table_names:
            problems.append(
                (path_loc + (index, "map", "table"), f"no table named {spec.map_.table!r}; known: {known}")
            )
        elif spec.kind == "python":
            try:
                hatch.import_target(spec.python)
            except ValueError as exc:
                problems.append((path_loc + (index, "python"), str(exc)))
    return problems


_BUILDERS: dict[str, Callable[[str, object, Mapping[str, LookupTable]], Step]] = {
    "set": values.build_set,
    "copy": values.Copy,
    "delete": structure.Delete,
    "map": values.Map,
    "replace": values.Replace,
    "date": values.Date,
    "case": values.Case,
    "trim": values.Trim,
    "add_segment": structure.AddSegment,
    "remove_segment": structure.RemoveSegment,
    "rename_segment": structure.RenameSegment,
    "split": structure.Split,
    "join": structure.Join,
    "set_version": values.build_set_version,
    "python": hatch.Python,
    "xslt": xml.Xslt,
    "xpath": xml.XPathRead,
}
