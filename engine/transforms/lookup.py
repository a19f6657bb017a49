"""Lookup tables for the ``map`` transform: inline entries or a CSV file, loaded when the config is loaded.

A CSV table remembers the SHA-256 of the bytes it was read from, so a reload sees an edited file.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path

from engine.transforms.inputs import InputFile, sha256_of
from engine.transforms.spec import TableSpec

__all__ = ["LookupTable", "load_tables"]

Problem = tuple[tuple, str]


class LookupTable:
    """A named, read-only mapping from codes to codes; keys match exactly (case and spaces count).

    ``source`` is the CSV file the entries were read from (None for inline entries).
    """

    __slots__ = ("name", "source", "_entries")

    def __init__(self, name: str, entries: Mapping[str, str], source: InputFile | None = None):
        self.name = name
        self.source = source
        self._entries = dict(entries)

    def __repr__(self) -> str:
        return f"<LookupTable {self.name}: {len(self._entries)} entries>"

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, key: str) -> str | None:
        """The entry for ``key``, or None when the table has none."""
        return self._entries.get(key)


def load_tables(
    specs: Mapping[str, TableSpec], base_dir: Path
) -> tuple[dict[str, LookupTable], list[Problem]]:
    """Build every table; a CSV path is relative to ``base_dir``. Also return problems as (YAML loc, message).

    A table with a problem is left out of the result; the loader reports every problem at once.
    """
    tables: dict[str, LookupTable] = {}
    problems: list[Problem] = []
    for name, spec in specs.items():
        if spec.inline is not None:
            tables[name] = LookupTable(name, spec.inline)
            continue
        path = base_dir / spec.csv
        try:
            data = path.read_bytes()
        except OSError as exc:
            problems.append((("tables", name, "csv"), f"cannot read {path}: {exc.strerror or exc}"))
            continue
        entries, found = _read_csv(data, path, spec, ("tables", name))
        problems += found
        if not found:
            tables[name] = LookupTable(name, entries, InputFile("table", name, str(path), sha256_of(data)))
    return tables, problems


def _read_csv(data: bytes, path: Path, spec: TableSpec, loc: tuple) -> tuple[dict[str, str], list[Problem]]:
    """The entries of a CSV table: a header row, then one row per entry; BOM and quoting as Excel does."""
    try:
        text = io.StringIO(data.decode("utf-8-sig"), newline="")
        rows = list(csv.reader(text, skipinitialspace=True, strict=True))
    except UnicodeDecodeError:  # its position counts from a read buffer, not the file: not worth showing
        return {}, [(loc + ("csv",), f"{path} is not UTF-8 text; save it as UTF-8")]
    except csv.Error as exc:
        return {}, [(loc + ("csv",), f"{path} is not a valid CSV file: {exc}")]
    if not rows:
        return {}, [(loc + ("csv",), f"{path} is empty; its first row must name the columns")]

    header, *body = rows
    columns: dict[str, int] = {}
    problems: list[Problem] = []
    for option in ("key", "value"):
        column = getattr(spec, option)
        if header.count(column) != 1:
            how = "twice" if column in header else "nowhere"
            problems.append(
                (
                    loc + (option,),
                    f"column {column!r} appears {how} in the header of {path} (columns: {', '.join(header)})",
                )
            )
        else:
            columns[option] = header.index(column)
    if problems:
        return {}, problems

    entries: dict[str, str] = {}
    first_line: dict[str, int] = {}
    line = 1
    for row in body:
        line += 1
        if not row:  # csv.reader gives [] for a blank line
            continue
        if len(row) <= max(columns.values()):
            problems.append(
                (loc + ("csv",), f"{path} row {line} has {len(row)} column(s); the header has {len(header)}")
            )
            continue
        key, value = row[columns["key"]], row[columns["value"]]
        if key in entries and entries[key] != value:
            problems.append(
                (
                    loc + ("csv",),
                    f"{path} row {line}: key {key!r} is already mapped to {entries[key]!r}"
                    f" on row {first_line[key]}",
                )
            )
            continue
        entries[key] = value
        first_line.setdefault(key, line)
    return entries, problems
