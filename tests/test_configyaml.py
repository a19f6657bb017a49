"""engine/configyaml.py: channels.yaml as plain data: lines, YAML paths, environment variables, errors."""

from __future__ import annotations

import pytest

from engine.config import ConfigProblem, load_config
from engine.configyaml import format_path, read_document
from engine.errors import ConfigError
from tests.fakes.config import CONFIGS, parse, problems

# --- YAML syntax and document shapes ----------------------------------------------------------------------


def test_yaml_syntax_error_is_reported_with_its_line():
    """A YAML syntax error is one problem that carries the line where the parser stopped."""
    path = CONFIGS / "syntax_error.yaml"

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert caught.value.problems == [
        ConfigProblem("", 3, "invalid YAML: mapping values are not allowed here", str(path))
    ]


def test_duplicate_yaml_key_is_a_syntax_problem_on_the_second_key():
    """A key given twice in one mapping is refused (the second would silently win otherwise)."""
    found = problems(
        """\
        listeners: []
        channels: []
        listeners: []
        """
    )

    assert len(found) == 1
    assert found[0][:2] == ("", 3)
    assert found[0][2].startswith('invalid YAML: found duplicate key "listeners"')


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", [("listeners", 1, "required key is missing"), ("channels", 1, "required key is missing")]),
        ("- a\n- b\n", [("", 1, "must be a mapping (got a list)")]),
        ("listeners: {}\nchannels: []\n", [("listeners", 1, "must be a list (got a mapping)")]),
        (
            "listeners: []\nchannels: []\nengine: !secret x\n",
            [("engine", 3, "YAML tags are not supported (got !secret)")],
        ),
    ],
)
def test_wrong_document_shapes_are_located(text, expected):
    """An empty file, a list at the top, a mapping for a list and YAML tags each give a located problem."""
    assert problems(text) == expected


# --- environment variables ----------------------------------------------------------------------------------


def test_environment_variables_are_substituted_in_every_string():
    """${NAME}, ${NAME:-default} and $$ are replaced before validation, also inside lists and in numbers."""
    config = parse(
        """\
        engine:
          application: ${APP}
          facility: "${SITE:-HUB}-$$1"
          store: {url: "postgresql+psycopg://${DB_USER}:pa$$word@${DB_HOST:-127.0.0.1}/hl7"}
        listeners:
          - name: pms
            type: mllp
            endpoint: "tcp:${PMS_PORT}:interface=127.0.0.1"
            max_frame_bytes: ${MAX_FRAME:-2048}
            processing_ids: ["${PROCESSING_ID}"]
        channels: []
        """,
        environ={"APP": "ENGINE1", "DB_USER": "hl7", "PMS_PORT": "3575", "PROCESSING_ID": "T"},
    )

    assert config.engine.application == "ENGINE1"
    assert config.engine.facility == "HUB-$1"
    assert config.store_url == "postgresql+psycopg://hl7:pa$word@127.0.0.1/hl7"
    assert config.listener("pms").endpoint == "tcp:3575:interface=127.0.0.1"
    assert config.listener("pms").max_frame_bytes == 2048
    assert config.listener("pms").processing_ids == ("T",)


def test_empty_variable_takes_the_default_and_unset_without_default_is_a_problem():
    """Like the shell, :- also covers a set-but-empty variable; ${NAME} of an empty variable is ''."""
    config = parse(
        "engine: {application: '${A:-DEFAULT}', facility: 'X${B}'}\nlisteners: []\nchannels: []\n",
        environ={"A": "", "B": ""},
    )
    assert (config.engine.application, config.engine.facility) == ("DEFAULT", "X")

    assert problems(
        "engine: {application: '${A}', facility: '${B} ${C}'}\nlisteners: []\nchannels: []\n",
        environ={"C": "c"},
    ) == [
        ("engine.application", 1, "environment variable A is not set"),
        ("engine.facility", 1, "environment variable B is not set"),
    ]


@pytest.mark.parametrize("value", ["${}", "${1X}", "${X", "${X-default}"])
def test_malformed_variable_reference_is_a_problem(value):
    """A '${' that is not ${NAME} or ${NAME:-default} is reported rather than kept literally."""
    assert problems(
        f"engine: {{application: '{value}'}}\nlisteners: []\nchannels: []\n", environ={"X": "x"}
    ) == [
        (
            "engine.application",
            1,
            "malformed ${...}: write ${NAME} or ${NAME:-default}, and $$ for a literal $",
        )
    ]


def test_a_lone_dollar_is_literal():
    """A '$' not followed by '{' or '$' stays as written (passwords often contain one)."""
    config = parse("engine: {application: 'A$B$'}\nlisteners: []\nchannels: []\n", environ={})

    assert config.engine.application == "A$B$"


# --- the document -------------------------------------------------------------------------------------------


def test_a_path_writes_keys_with_dots_and_indexes_in_brackets():
    """format_path gives the YAML path problems are reported at; the whole document is ''."""
    assert format_path(("channels", 2, "accept", "types", 0)) == "channels[2].accept.types[0]"
    assert (format_path(()), format_path((0, "name"))) == ("", "[0].name")


def test_every_place_has_its_line_and_a_missing_one_its_nearest_parents():
    """Keys and items keep their line; a key that is not there is located at the mapping that lacks it."""
    document = read_document("engine:\n  facility: HUB\nlisteners:\n  - name: a\n  - {name: b}\n", {})
    assert (
        document.line_of(("engine", "facility")),
        document.line_of(("listeners", 1, "name")),
        document.line_of(("listeners", 1, "endpoint", "port")),
        document.line_of(()),
    ) == (2, 5, 5, 1)


def test_values_become_plain_python_and_merged_keys_take_their_mappings_line():
    """ruamel's types become plain dict, list, int, float, bool, None; a merged (``<<``) key has no line."""
    document = read_document("base: &b\n  x: 0x10\nother:\n  <<: *b\n  z: [true, 1.5, null]\n", {})
    assert document.data == {"base": {"x": 16}, "other": {"z": [True, 1.5, None], "x": 16}}
    other = document.data["other"]
    assert (type(document.data), type(other), type(other["z"]), type(other["x"])) == (dict, dict, list, int)
    assert (document.line_of(("other", "x")), document.line_of(("other", "z", 1))) == (3, 5)
    assert document.problems == []


def test_problems_met_while_reading_are_kept_with_their_place():
    """An unset variable and a YAML tag are problems of the Document, at their place, read on regardless."""
    document = read_document("a: ${UNSET}\nb: !tag x\nc: ok\n", {})
    assert document.problems == [
        (("a",), "environment variable UNSET is not set"),
        (("b",), "YAML tags are not supported (got !tag)"),
    ]
    assert document.data == {"a": "", "b": None, "c": "ok"}
