"""Lookup tables for the ``map`` transform: inline entries or a CSV file, loaded once at config time."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

from engine.transforms.spec import TableSpec

__all__ = ["LookupTable", "load_tables"]

Problem = tuple[tuple, str]


class LookupTable:
    """A named, read-only mapping from codes to codes; keys match exactly (case and spaces count)."""

    __slots__ = ("name", "_entries")

    def __init__(self, name: str, entries: Mapping[str, str]):
        self.name = name
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
        entries, found = _read_csv(base_dir / spec.csv, spec, ("tables", name))
        problems += found
        if not found:
            tables[name] = LookupTable(name, entries)
    return tables, problems


def _read_csv(path: Path, spec: TableSpec, loc: tuple) -> tuple[dict[str, str], list[Problem]]:
    """The entries of a CSV table: a header row, then one row per entry; BOM and quoting as Excel does."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:
            rows = list(csv.reader(file, skipinitialspace=True, strict=True))
    except OSError as exc:
        return {}, [(loc + ("csv",), f"cannot read {path}: {exc.strerror or exc}")]
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
