"""engine.store.driver.text: the one way text is fitted to a column (NULs, lone surrogates, length)."""

from __future__ import annotations

from engine.store.driver import fit_row, fit_text
from tests.fakes.driver import items


def test_fit_text_returns_text_that_fits_as_it_is():
    """ASCII text without NULs that fits comes back as it is (the very object); None allows any length."""
    text = "LAB^NORTH"
    assert fit_text(text, 9) is text and fit_text(text, None) is text
    assert fit_text("é中😀", 3) == "é中😀"


def test_fit_text_drops_nuls_replaces_lone_surrogates_and_cuts():
    """NULs go, undecodable bytes (lone surrogates) become "?", and the text is cut to its length."""
    assert fit_text("a\x00b\x00c", None) == "abc"
    assert fit_text("L\udce9B", None) == "L?B"
    assert fit_text("\x00" + "9" * 300, 199) == "9" * 199
    assert fit_text("é\udcff\x00é" * 3, 4) == "é?éé"


def test_fit_row_fits_the_text_columns_of_its_table_only():
    """fit_row fits each text of a text column of the table; other values stay as given, in a new dict."""
    values = {"name": "x\x00" + "y" * 20, "count": 3, "at": None, "other": "z" * 20}
    fitted = fit_row(items, values)
    assert fitted == {"name": "xyyyyyyy", "count": 3, "at": None, "other": "z" * 20}
    assert values["name"] == "x\x00" + "y" * 20
