"""The documentation stands alone: it builds in strict mode, refers to nothing outside the repository,
documents every key of channels.yaml, and its tutorial and cookbook configs run as written.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel
from ruamel.yaml import YAML
from twisted.internet.testing import MemoryReactorClock

from engine.channels.build import build_channel
from engine.config import Config, load_config, parse_config
from engine.configcheck import config_warnings
from engine.model import Status
from engine.record.apply.adt import AdtApplication, MergeApplication
from engine.record.apply.dft import DftApplication
from engine.record.apply.oru import OruApplication
from engine.record.apply.siu import SiuApplication

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"

#: Where a reader would be sent outside the repository: files only the project's authors have,
#: its issue tracker (a number, "the issue"), or the authors' own helpers, which mean nothing to
#: someone who has only the repository.
OUTSIDE = re.compile(
    r"\.\./shared|/work/|STYLE\.md|HL7-NOTES|\bissues?\s*#?\d+|\bthe issue\b|\bhelpers'", re.IGNORECASE
)

#: The pages that make the channels.yaml reference: each model's keys are documented on its page.
REFERENCE = {
    "engine.transforms.spec": "transforms.md",
    "engine.channels.destinations.spec": "destinations.md",
}
DEFAULT_REFERENCE = "configuration.md"

#: The record's families of messages, each with the events (triggers) it applies.
FAMILIES = (AdtApplication, MergeApplication, SiuApplication, OruApplication, DftApplication)


#: The benchmark's own docs and reports (not what its baselines' packages install beside them).
REPORTS = [ROOT / "bench" / "README.md", *sorted((ROOT / "bench" / "results").glob("*.md"))]


def _pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def test_the_docs_build_with_mkdocs_in_strict_mode(tmp_path):
    """`mkdocs build --strict` passes: every page is in the nav, every link and anchor resolves."""
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    assert (tmp_path / "site" / "index.html").is_file()


def test_the_docs_refer_to_nothing_outside_the_repository():
    """No page (nor the README, the changelog, the benchmark's reports) points outside the repository."""
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in [*_pages(), *REPORTS, ROOT / "README.md", ROOT / "CHANGELOG.md"]
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert found == []


def test_the_code_points_readers_to_nothing_outside_the_repository():
    """No comment or docstring in engine/ points to the authors' own notes outside the repository."""
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted((ROOT / "engine").rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"\.\./shared|STYLE\.md|STYLE rule|HL7-NOTES", line)
    ]
    assert found == []


def test_the_readme_names_only_files_that_exist():
    """Each link of the README, and each docs/ page it names, is a file in the repository."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)#\s]+)", text)
    named = re.findall(r"`(docs/[\w/.-]+\.md)`", text)
    targets = [link for link in links if "://" not in link] + named
    assert named, "the README maps the docs"
    assert [target for target in targets if not (ROOT / target).exists()] == []


#: Folders the benchmark makes on its first run: the docs name them, no checkout has them.
GENERATED = ("bench/.deps/", "bench/node/")


def test_the_repository_paths_the_docs_name_exist():
    """Each repository file or folder a page or the README names in backticks (`engine/...`) exists."""
    named = [
        (f"{path.relative_to(ROOT)}:{number}", target.rstrip(".,)"))
        for path in [*_pages(), ROOT / "README.md"]
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        for target in re.findall(r"`((?:engine|tests|docs|bench|deploy|\.ci)/[^`\s:]*)", line)
        if not any(char in target for char in "*<{")
    ]
    assert len(named) > 50, "the pattern finds the paths the docs name"
    missing = [
        f"{where}: {target}"
        for where, target in named
        if not (ROOT / target).exists() and not f"{target}/".startswith(GENERATED)
    ]
    assert missing == []


def test_the_record_page_says_what_each_event_the_record_applies_does():
    """Every event a record family applies (ADT, SIU, ORU, DFT triggers) has its row in record.md's table."""
    text = (DOCS / "record.md").read_text(encoding="utf-8")
    # The first cell of each table row: `| ADT A01 / A04 / A05 | ...`.
    rows = [line.split("|")[1] for line in text.splitlines() if line.startswith("| ")]
    events = [(family.code, trigger) for family in FAMILIES for trigger in family.triggers if trigger]
    assert {code for code, _ in events} >= {"ADT", "SIU", "ORU", "DFT"}
    missing = [
        f"{code}^{trigger}"
        for code, trigger in events
        if not any(row.startswith(f" {code} ") and re.search(rf"\b{trigger}\b", row) for row in rows)
    ]
    assert missing == []


def _keys(annotation, path: str, stack: tuple = ()) -> typing.Iterator[tuple[str, type, str]]:
    """(YAML path, model, key) of every key a config model accepts, through lists, mappings and unions."""
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation in stack:  # filters nest: any/all/not hold filters
            return
        for name, field in annotation.model_fields.items():
            key = field.alias or name
            where = f"{path}.{key}" if path else key
            # A key is documented with the model that declares it (a destination type's settings
            # are declared apart from the keys every destination has).
            owner = next(base for base in annotation.__mro__ if name in getattr(base, "__annotations__", {}))
            yield where, owner, key
            yield from _keys(field.annotation, where, (*stack, annotation))
    elif origin in (tuple, list):
        yield from _keys(arguments[0], f"{path}[]", stack)
    elif origin is dict or getattr(origin, "__name__", "") == "Mapping":
        yield from _keys(arguments[1], f"{path}.<name>", stack)
    elif origin is typing.Annotated or origin is typing.Union or origin is types.UnionType:
        for argument in arguments:
            yield from _keys(argument, path, stack)


def _documented(key: str, text: str) -> bool:
    # A key is documented in a table (`key`), in prose (`key: value`), or in a YAML example.
    quoted = re.escape(key)
    pattern = rf"`(?:[^`\s]*\.)?{quoted}`|`{quoted}:|^\s*-?\s*{quoted}:|[{{,]\s*{quoted}:"
    return re.search(pattern, text, re.MULTILINE) is not None


def test_every_key_the_config_loader_accepts_is_documented():
    """Each key of channels.yaml, found by walking the loader's models, is on its reference page."""
    pages = {*REFERENCE.values(), DEFAULT_REFERENCE}
    texts = {page: (DOCS / page).read_text(encoding="utf-8") for page in pages}
    keys = list(_keys(Config, ""))
    missing = sorted(
        {
            f"{where} (on {REFERENCE.get(model.__module__, DEFAULT_REFERENCE)})"
            for where, model, key in keys
            if not _documented(key, texts[REFERENCE.get(model.__module__, DEFAULT_REFERENCE)])
        }
    )
    assert len(keys) > 150, "the walk reaches the stage models"
    assert missing == []


def _run(config: Config, channel: str, message: str):
    """The channel's pipeline on one message: what it passes to each destination; nothing stored or sent."""
    index = [c.name for c in config.channels].index(channel)
    built = build_channel(
        config,
        index,
        store=None,
        reactor=MemoryReactorClock(),
        channels={},
        tables=config.lookup_tables,
        delivery=False,
    )
    return built.pipeline.process_text(1, message, "utf-8", "1")


def _hl7(block: str) -> str:
    """An HL7 message as the docs print it (a segment a line) in its wire form."""
    return "\r".join(line for line in block.strip().splitlines())


def _outputs(result) -> dict[str, str]:
    return {
        d.destination: d.payload.decode("utf-8").rstrip("\r").replace("\r", "\n")
        for d in result.deliveries
        if d.status == Status.QUEUED
    }


def test_the_tutorial_config_passes_check_and_sends_the_pms_admission_to_the_emr_as_written():
    """The tutorial's channels.yaml passes `hl7engine check`, no warning, and makes the output shown."""
    folder = EXAMPLES / "tutorial"
    checked = subprocess.run(
        [sys.executable, "-m", "engine", "check", str(folder / "channels.yaml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "OK" in checked.stdout and checked.stderr == ""  # no warning either
    config = load_config(folder / "channels.yaml", environ={})
    sent = (folder / "adt_a01.hl7").read_text(encoding="utf-8")
    result = _run(config, "pms-to-emr", _hl7(sent))
    assert result.status == Status.QUEUED, result.reason
    expected = (folder / "adt_a01.emr.hl7").read_text(encoding="utf-8").strip()
    assert _outputs(result) == {"emr": expected}
    tutorial = (DOCS / "tutorial.md").read_text(encoding="utf-8")
    shown = [(folder / name).read_text(encoding="utf-8").strip() for name in ("channels.yaml", "wards.csv")]
    assert [text for text in [expected, sent.strip(), *shown] if text not in tutorial] == []


def test_the_tutorial_channel_filters_test_messages_with_the_reason_shown():
    """A training (MSH-11 T) message is FILTERED by the tutorial's channel, as the tutorial says."""
    config = load_config(EXAMPLES / "tutorial" / "channels.yaml", environ={})
    sent = _hl7((EXAMPLES / "tutorial" / "adt_a01.hl7").read_text(encoding="utf-8"))
    sent = sent.replace("|P|2.5.1", "|T|2.5.1")
    result = _run(config, "pms-to-emr", sent)
    assert result.status == Status.FILTERED
    assert result.reason in (DOCS / "tutorial.md").read_text(encoding="utf-8")


def _recipes() -> list[tuple[str, str, str, list[str]]]:
    """(title, YAML, message in, [each destination's message out]) of each cookbook recipe."""
    text = (DOCS / "cookbook.md").read_text(encoding="utf-8")
    recipes = []
    for section in re.split(r"^## ", text, flags=re.MULTILINE)[1:]:
        title = section.splitlines()[0]
        blocks = re.findall(r"^```(\w+)\n(.*?)^```", section, re.MULTILINE | re.DOTALL)
        snippets = [body for language, body in blocks if language == "yaml"]
        messages = [body for language, body in blocks if language == "hl7"]
        if snippets:
            recipes.append((title, snippets[0], messages[0], messages[1:]))
    return recipes


RECIPES = _recipes()


def test_the_cookbook_has_each_recipe_the_docs_promise():
    """The cookbook covers MRN reformatting, code mapping, dates, Z segments and splitting an ORU by OBR."""
    titles = " ".join(title for title, *_ in RECIPES).lower()
    for topic in ("mrn", "code", "date", "z segment", "split"):
        assert topic in titles


@pytest.mark.parametrize(("title", "snippet", "given", "expected"), RECIPES, ids=[r[0] for r in RECIPES])
def test_each_cookbook_recipe_turns_its_message_into_the_output_shown(title, snippet, given, expected):
    """A recipe's YAML, put in a channel, passes `check` without a warning and makes of the message
    shown exactly the output shown."""
    fragment = YAML(typ="safe").load(snippet)
    tables = fragment.pop("tables", {})
    fragment.setdefault("destinations", [{"name": "out", "type": "file", "directory": "out"}])
    # The recipe's message type, so that check judges its field paths against that structure.
    message_type = "^".join(given.strip().split("|")[8].split("^")[:2])
    channel = {"name": "recipe", "source": "main", "accept": {"types": [message_type]}, **fragment}
    document = {
        "engine": {"data_dir": "data"},
        "listeners": [{"name": "main", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "tables": tables,
        "channels": [channel],
    }
    out = io.StringIO()
    YAML(typ="safe").dump(document, out)
    config = parse_config(out.getvalue(), source="cookbook.md", base_dir=EXAMPLES / "cookbook", environ={})
    assert config_warnings(config) == []  # what `hl7engine check` would print after OK
    result = _run(config, "recipe", _hl7(given))
    assert result.status == Status.QUEUED, result.reason
    assert list(_outputs(result).values()) == [message.strip() for message in expected]


def test_the_readme_maps_every_page_of_docs():
    """The README's documentation list names each top-level page of docs/ (reliability/ has its own map)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert [page.name for page in sorted(DOCS.glob("*.md")) if f"`docs/{page.name}`" not in readme] == []
