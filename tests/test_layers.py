"""The engine's dependencies run one way: each package imports only the layers below it.

model, lograte <- hl7 <- store, record <- transforms <- channels <- listeners, web <- config <- service <- cli
(docs/architecture.md). Imports inside ``if TYPE_CHECKING:`` are for type hints only and not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[1] / "engine"

#: Each top-level part of the engine and its layer: a part may import parts of a lower layer only.
LAYERS = {
    "model": 0,
    "errors": 0,
    "configtypes": 0,
    "lograte": 0,
    "hl7": 1,
    # v2 -> FHIR R4 pieces (code systems, concepts, value maps, the message mapping): the record's
    # $everything export and the fhir destination both build on them.
    "fhirmap": 1,
    "store": 2,
    "record": 2,
    "transforms": 3,
    "channels": 4,
    "listeners": 5,
    "web": 5,
    "configyaml": 6,
    "config": 6,
    "configcheck": 6,
    "configengine": 6,
    "configstore": 6,
    "service": 7,
    "serviceparts": 7,
    "servicereload": 7,
    "cli": 8,
    "__main__": 9,
}
#: Parts of one layer that may use each other, in this direction only.
BESIDE = {
    ("record", "store"),
    ("fhirmap", "hl7"),
    ("config", "configyaml"),
    ("config", "configengine"),
    ("configstore", "configyaml"),
    ("configstore", "configengine"),
    ("configcheck", "config"),
    ("configcheck", "configyaml"),
    ("service", "serviceparts"),
    ("service", "servicereload"),
}
#: The Alembic environment imports the record's tables so that autogenerate sees the whole database.
EXEMPT = {("engine.store.migrations.env", "engine.record")}


def runtime_imports(path: Path) -> set[str]:
    """The engine modules ``path`` imports when it runs (not those imported for type checking)."""
    found: set[str] = set()

    class Imports(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                for statement in node.orelse:
                    self.visit(statement)
                return
            self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            found.update(alias.name for alias in node.names)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            if node.module and node.level == 0:
                found.add(node.module)

    Imports().visit(ast.parse(path.read_text(encoding="utf-8")))
    return {name for name in found if name == "engine" or name.startswith("engine.")}


def part_of(module: str) -> str:
    return module.split(".")[1]


def violations(root: Path = ENGINE) -> list[str]:
    """Every import that runs against the layers, as ``importer -> imported``."""
    wrong = []
    for path in sorted(root.rglob("*.py")):
        module = ".".join(path.relative_to(root.parent).with_suffix("").parts)
        if module == "engine.__init__" or part_of(module) == "__init__":
            continue
        for imported in runtime_imports(path):
            if imported == "engine" or (module, imported) in EXEMPT:
                continue
            mine, theirs = part_of(module), part_of(imported)
            if mine == theirs or (mine, theirs) in BESIDE:
                continue
            if LAYERS[theirs] >= LAYERS[mine]:
                wrong.append(f"{module} -> {imported}")
    return wrong


def test_every_part_of_the_engine_has_a_layer():
    """A new top-level module or package must be placed in LAYERS before it can be checked."""
    parts = {path.stem if path.is_file() else path.name for path in ENGINE.iterdir()}
    parts = {part for part in parts if not part.startswith("__") or part == "__main__"} - {"__pycache__"}
    assert parts <= set(LAYERS), sorted(parts - set(LAYERS))


def test_dependencies_run_one_way():
    """No engine module imports, at run time, a part of its own layer or of a layer above it."""
    assert violations() == []


def test_the_check_sees_an_import_against_the_layers(tmp_path):
    """The check itself fails on a store module that imports the channels."""
    engine = tmp_path / "engine"
    (engine / "store").mkdir(parents=True)
    (engine / "store" / "queues.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from engine.model import Status\n"
        "if TYPE_CHECKING:\n"
        "    from engine.web.auth import Gate\n"
        "from engine.channels.pipeline import Pipeline\n"
    )
    assert violations(engine) == ["engine.store.queues -> engine.channels.pipeline"]
