"""Lookup tables: inline and CSV, and every problem a CSV file can have, reported at its YAML key."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from engine.transforms.inputs import InputFile
from engine.transforms.lookup import LookupTable, load_tables
from engine.transforms.spec import TableSpec


def csv_spec(file: str = "tables/payers.csv", key: str = "code", value: str = "payer_id") -> TableSpec:
    """A CSV table spec."""
    return TableSpec.model_validate({"csv": file, "key": key, "value": value})


def write(base: Path, text: str | bytes, file: str = "tables/payers.csv") -> Path:
    """Write a table file under base (bytes as given, text as UTF-8)."""
    path = base / file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def test_lookup_finds_exact_keys_only():
    """lookup answers the entry for a key, and None for a key that differs in case or spaces."""
    table = LookupTable("sex", {"M": "male", "F": "female"})
    assert (table.lookup("M"), table.lookup("m"), table.lookup(" M"), len(table)) == ("male", None, None, 2)


def test_inline_tables_load_as_given(tmp_path):
    """An inline table becomes a LookupTable with the same name and entries."""
    tables, problems = load_tables({"sex": TableSpec.model_validate({"inline": {"M": "male"}})}, tmp_path)
    assert problems == []
    assert (tables["sex"].name, tables["sex"].lookup("M")) == ("sex", "male")


def test_csv_with_bom_quotes_and_extra_columns(tmp_path):
    """A BOM, quoted values with commas, quotes and line breaks, spaces after commas, CRLF, blank lines.

    All read right.
    """
    write(
        tmp_path,
        b"\xef\xbb\xbfname,code,payer_id\r\n"
        b'"Acme, Inc.",AC, P-1\r\n'
        b"\r\n"
        b'"Say ""hi""","Q""1","two\nlines"\r\n'
        b"Caf\xc3\xa9,C\xc3\x89,P-3\r\n",
    )
    tables, problems = load_tables({"payers": csv_spec()}, tmp_path)
    assert problems == []
    payers = tables["payers"]
    assert (payers.lookup("AC"), payers.lookup('Q"1'), payers.lookup("CÉ"), len(payers)) == (
        "P-1",
        "two\nlines",
        "P-3",
        3,
    )


def test_csv_path_is_relative_to_the_base_dir(tmp_path, monkeypatch):
    """The csv path resolves against base_dir, not the working folder."""
    write(tmp_path, "code,payer_id\nA,1\n")
    monkeypatch.chdir(tmp_path / "tables")
    tables, problems = load_tables({"payers": csv_spec()}, tmp_path)
    assert (problems, tables["payers"].lookup("A")) == ([], "1")


def test_repeated_rows_with_the_same_value_are_fine(tmp_path):
    """A key listed twice with the same value is one entry."""
    write(tmp_path, "code,payer_id\nA,1\nA,1\n")
    tables, problems = load_tables({"payers": csv_spec()}, tmp_path)
    assert (problems, len(tables["payers"])) == ([], 1)


@pytest.mark.parametrize(
    ("content", "loc_key", "message"),
    [
        (None, "csv", "cannot read {path}: No such file or directory"),
        (b"", "csv", "{path} is empty; its first row must name the columns"),
        (b"code,payer_id\nA,\xff\n", "csv", "{path} is not UTF-8 text; save it as UTF-8"),
        (b'code,payer_id\n"A,1\n', "csv", "{path} is not a valid CSV file: unexpected end of data"),
        (
            b"kode,payer_id\nA,1\n",
            "key",
            "column 'code' appears nowhere in the header of {path} (columns: kode, payer_id)",
        ),
        (
            b"code,payerid\nA,1\n",
            "value",
            "column 'payer_id' appears nowhere in the header of {path} (columns: code, payerid)",
        ),
        (
            b"code,payer_id,code\nA,1,B\n",
            "key",
            "column 'code' appears twice in the header of {path} (columns: code, payer_id, code)",
        ),
        (b"code,payer_id\nA\n", "csv", "{path} row 2 has 1 column(s); the header has 2"),
        (b"code,payer_id\nA,1\nB,2\nA,3\n", "csv", "{path} row 4: key 'A' is already mapped to '1' on row 2"),
    ],
)
def test_csv_problems_are_reported_at_their_key(tmp_path, content, loc_key, message):
    """Each CSV problem is one (loc, message) at tables.<name>.<key>, and the table is left out."""
    path = tmp_path / "tables" / "payers.csv"
    if content is not None:
        write(tmp_path, content)
    tables, problems = load_tables({"payers": csv_spec()}, tmp_path)
    assert problems == [(("tables", "payers", loc_key), message.format(path=path))]
    assert "payers" not in tables


def test_every_table_problem_is_reported_at_once(tmp_path):
    """Problems of several tables come back together; good tables still load."""
    write(tmp_path, "code,payer_id\nA,1\n", "good.csv")
    specs = {
        "good": csv_spec("good.csv"),
        "missing": csv_spec("missing.csv"),
        "badcolumns": csv_spec("good.csv", key="k", value="v"),
        "inline": TableSpec.model_validate({"inline": {"x": "y"}}),
    }
    tables, problems = load_tables(specs, tmp_path)
    assert sorted(tables) == ["good", "inline"]
    assert [loc for loc, _ in problems] == [
        ("tables", "missing", "csv"),
        ("tables", "badcolumns", "key"),
        ("tables", "badcolumns", "value"),
    ]


def test_a_csv_table_keeps_the_hash_of_the_bytes_it_was_read_from(tmp_path):
    """A CSV table's source names the table, its file and the SHA-256 of its bytes; inline has none."""
    path = write(tmp_path, b"\xef\xbb\xbfcode,payer_id\r\nA,1\r\n")
    specs = {"payers": csv_spec(), "inline": TableSpec.model_validate({"inline": {"x": "y"}})}
    tables, _ = load_tables(specs, tmp_path)
    assert tables["payers"].source == InputFile(
        "table", "payers", str(path), hashlib.sha256(path.read_bytes()).hexdigest()
    )
    assert tables["inline"].source is None
