"""channels.yaml as plain data: the line of every place, environment variables, and problems in YAML words.

ruamel.yaml's round-trip loader keeps the line of every key and item; ``Document`` turns its tree
into plain dicts, lists and scalars for pydantic, substituting ``${NAME}`` references on the way,
and remembers each place's line. ``validation_problems`` says what pydantic's errors mean at a
place of the file, so a problem reads ``channels[2].accept.types[0]: unknown key 'typez'``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML, YAMLError
from ruamel.yaml.comments import TaggedScalar

from engine.errors import ConfigError

__all__ = [
    "ConfigProblem",
    "Document",
    "read_config_text",
    "Loc",
    "format_path",
    "read_document",
    "validation_problems",
    "yaml_error",
]


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with a configuration: in which file (source), where (YAML path, line), and what."""

    path: str
    line: int | None
    message: str
    source: str = "<string>"

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


# A place in the document: mapping keys and sequence indexes, e.g. ("channels", 2, "accept", "types", 0).
Loc = tuple[str | int, ...]


def read_config_text(path: str | Path) -> tuple[str, Path]:
    """(the text of a channels.yaml file, its absolute path); ConfigError when it cannot be read."""
    source_path = Path(path).absolute()
    try:
        return source_path.read_text(encoding="utf-8-sig"), source_path
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigProblem("", None, f"cannot read the file: {exc}", str(path))]) from None


def read_document(text: str, environ: Mapping[str, str]) -> Document:
    """Parse YAML text into a Document; raises YAMLError when it is not YAML."""
    tree = YAML(typ="rt").load(text)
    return Document.read({} if tree is None else tree, environ)


def yaml_error(error: YAMLError) -> tuple[int | None, str]:
    """The 1-based line (None when unknown) and the description of a YAML syntax error."""
    problem_mark = getattr(error, "problem_mark", None)
    context_mark = getattr(error, "context_mark", None)
    message = f"invalid YAML: {getattr(error, 'problem', None) or error}"
    context = getattr(error, "context", None)
    if context:
        message += f" ({context}, line {context_mark.line + 1})" if context_mark else f" ({context})"
    return (problem_mark.line + 1 if problem_mark else None), message


def validation_problems(data: Any, error: ValidationError) -> list[tuple[Loc, str]]:
    """Each of pydantic's errors on ``data`` as (the place in the document, what is wrong there)."""
    found = []
    for detail in error.errors(include_url=False):
        loc = _data_loc(data, detail["loc"], detail["type"])
        if detail["type"] in ("union_tag_invalid", "union_tag_not_found"):
            # A tagged union (listener or destination type): the problem is the `type` key.
            loc, detail = (
                loc + ("type",),
                {
                    **detail,
                    "type": "missing" if detail["type"] == "union_tag_not_found" else "union_tag_invalid",
                },
            )
        found.append((loc, _describe(detail)))
    return found


_REFERENCE = re.compile(
    r"\$(?:(?P<dollar>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}|(?P<bad>\{))"
)


def _substitute(text: str, environ: Mapping[str, str]) -> tuple[str, list[str]]:
    """Replace ${NAME}, ${NAME:-default} and $$ in one string; also return what went wrong."""
    errors: list[str] = []

    def replace(match: re.Match[str]) -> str:
        if match["dollar"]:
            return "$"
        if match["bad"]:
            errors.append("malformed ${...}: write ${NAME} or ${NAME:-default}, and $$ for a literal $")
            return ""
        value = environ.get(match["name"])
        if match["default"] is not None and not value:
            return match["default"]
        if value is None:
            errors.append(f"environment variable {match['name']} is not set")
            return ""
        return value

    return _REFERENCE.sub(replace, text), errors


@dataclass
class Document:
    """The YAML tree as plain dicts/lists/scalars, the line of every place in it, and the problems met."""

    data: Any = None
    lines: dict[Loc, int] = field(default_factory=dict)
    problems: list[tuple[Loc, str]] = field(default_factory=list)

    @classmethod
    def read(cls, tree: Any, environ: Mapping[str, str]) -> Document:
        """Convert a ruamel round-trip tree, substituting environment variables in every string."""
        document = cls(lines={(): _line(tree)})
        document.data = document._plain(tree, (), environ)
        return document

    def _plain(self, node: Any, loc: Loc, environ: Mapping[str, str]) -> Any:
        if isinstance(node, dict):
            plain = {}
            for key, value in node.items():
                child = loc + (key if isinstance(key, str) else str(key),)
                self.lines[child] = _line(node, key, default=self.lines[loc])
                plain[child[-1]] = self._plain(value, child, environ)
            return plain
        if isinstance(node, list):
            items = []
            for index, value in enumerate(node):
                self.lines[loc + (index,)] = _line(node, index, default=self.lines[loc])
                items.append(self._plain(value, loc + (index,), environ))
            return items
        if isinstance(node, TaggedScalar):
            self.problems.append((loc, f"YAML tags are not supported (got {node.tag.value})"))
            return None
        if isinstance(node, str):
            text, errors = _substitute(node, environ)
            self.problems.extend((loc, error) for error in errors)
            return text
        if isinstance(node, bool):
            return node
        if isinstance(node, int):  # ruamel's ScalarInt, HexInt... become plain ints
            return int(node)
        if isinstance(node, float):
            return float(node)
        return node

    def line_of(self, loc: Loc) -> int:
        """The line of this place, or of its nearest parent present in the file (for a missing key)."""
        while loc not in self.lines:
            loc = loc[:-1]
        return self.lines[loc]


def _line(node: Any, key: Any = None, default: int = 1) -> int:
    """The 1-based line of a key or item of a ruamel node, or of the node itself when key is None."""
    positions = getattr(node, "lc", None)
    if positions is None:
        return default
    if key is None:
        return positions.line + 1
    position = positions.data.get(key)  # merged (<<) keys have no position of their own
    return default if position is None else position[0] + 1


def format_path(loc: Loc) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path


def _data_loc(data: Any, loc: tuple[str | int, ...], error_type: str) -> Loc:
    """Map a pydantic loc to a place in the document, dropping schema-only steps (union tags, validators)."""
    place: list[str | int] = []
    node = data
    for position, part in enumerate(loc):
        if isinstance(node, dict) and isinstance(part, str) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        elif not (error_type == "missing" and position == len(loc) - 1):
            continue
        place.append(part)
    return tuple(place)


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_EXPECTED = {
    "model_type": "a mapping",
    "dict_type": "a mapping",
    "tuple_type": "a list",
    "list_type": "a list",
    "path_type": "a path",
}


def _describe(error: Mapping[str, Any]) -> str:
    """Say what a pydantic error means in terms of the YAML file."""
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"unknown key {error['loc'][-1]!r}"
    if kind == "missing":
        expected = (error.get("ctx") or {}).get("expected_tags")
        return f"required key is missing (one of {expected})" if expected else "required key is missing"
    if kind == "union_tag_invalid":
        return f"must be one of {error['ctx']['expected_tags']} (got {error['ctx']['tag']!r})"
    if kind == "value_error":
        return str(error["ctx"]["error"])
    if kind in _EXPECTED:
        message = f"must be {_EXPECTED[kind]}"
    else:
        message = re.sub(r"^Input should be ", "must be ", error["msg"])
    return f"{message} (got {_show(error['input'])})"
