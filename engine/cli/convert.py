"""``hl7engine convert``: HL7 files to another form (v2.xml, ER7, FHIR R4), one output per message.

Each input is ER7 (a message, a batch or a file of messages) or a v2.xml document (it starts
with ``<``). Every message is read as ER7 text and handed to the target's function. A target is
a name and a function from ER7 text to the output text (``TARGETS``); ``fhir`` gives the
message's FHIR R4 Bundle as JSON (``engine.fhirmap``), a transaction Bundle unless
``--bundle-type collection``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import click

from engine.cli.app import read_sources
from engine.cli.validate import message_texts
from engine.fhirmap.bundle import BUNDLE_TYPES

__all__ = ["TARGETS"]


def _to_xml(text: str) -> str:
    from engine.hl7.xml import to_xml

    return to_xml(text).decode("utf-8")


def _to_er7(text: str) -> str:
    return text.replace("\r\n", "\r").replace("\n", "\r").rstrip("\r") + "\r"


def _to_fhir(text: str, bundle_type: str = "transaction") -> str:
    """The message's Bundle; times without an offset are read in this machine's time zone."""
    import json

    from engine.fhirmap.bundle import to_fhir_bundle
    from engine.hl7.message import Message

    bundle = to_fhir_bundle(Message.parse(text), bundle_type=bundle_type)
    return json.dumps(bundle, indent=2, ensure_ascii=False)


#: Target name -> (function from one message's ER7 text to the output, file suffix).
TARGETS: dict[str, tuple[Callable[[str], str], str]] = {
    "xml": (_to_xml, ".xml"),
    "er7": (_to_er7, ".hl7"),
    "fhir": (_to_fhir, ".json"),
}


def _messages(data: bytes) -> list[str]:
    """The messages of an input as ER7 text: a v2.xml document is converted first."""
    if data.lstrip()[:1] == b"<":
        from engine.hl7.xml import from_xml

        return [from_xml(data)]
    return message_texts(data)


@click.command("convert")
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, allow_dash=True))
@click.option("--to", "target", required=True, type=click.Choice(sorted(TARGETS)), help="The output form.")
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False),
    help="Write one file per message there (<input name>.<n><suffix>) instead of to stdout.",
)
@click.option(
    "--bundle-type",
    type=click.Choice(BUNDLE_TYPES),
    help="With --to fhir: transaction (the default; conditional requests for a FHIR server)"
    " or collection (the resources only).",
)
def convert_command(
    sources: tuple[str, ...], target: str, output_dir: str | None, bundle_type: str | None
) -> None:
    """Convert HL7 files (ER7 or v2.xml; directories, '-' for stdin) to --to's form; exit 1 if one fails."""
    from engine.errors import HL7Error

    convert, suffix = TARGETS[target]
    if bundle_type is not None:
        if target != "fhir":
            raise click.UsageError("--bundle-type goes with --to fhir")
        convert = partial(_to_fhir, bundle_type=bundle_type)
    failures = 0
    out = Path(output_dir) if output_dir else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    for source in sources:
        for name, data in read_sources(source):
            try:
                texts = _messages(data)
            except HL7Error as error:
                failures += 1
                click.echo(f"{name}: not converted: {error}", err=True)
                continue
            for index, text in enumerate(texts, start=1):
                try:
                    result = convert(text)
                except HL7Error as error:
                    failures += 1
                    click.echo(f"{name}#{index}: not converted: {error}", err=True)
                    continue
                if out is None:
                    click.echo(result.replace("\r", "\n") if target == "er7" else result, nl=False)
                    click.echo()
                else:
                    (out / f"{Path(name).stem}.{index}{suffix}").write_text(
                        result, encoding="utf-8", newline=""
                    )
    if failures:
        sys.exit(1)
