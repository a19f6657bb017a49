"""The XML family of stages: ``xslt`` and ``xpath`` transforms and the ``xpath`` filter, over v2.xml.

Each reads the message as v2.xml (``engine.hl7.xml``). XPath expressions name v2.xml elements
with the prefix ``hl7`` (``//hl7:PID/hl7:PID.8``). A stylesheet is compiled once per
configuration load (``compile_stylesheet``, called by the spec's check and again, from its
cache, by the build) and run with the parameters of its YAML as XSLT string parameters; it may
not read from the network or write anything. XPath expressions are compiled when the spec is
checked, so a bad one is reported at its YAML path.
"""

from __future__ import annotations

from functools import lru_cache

from lxml import etree

from engine.errors import HL7Error, TransformError
from engine.hl7.message import Message
from engine.hl7.xml import NAMESPACE, from_element, to_element
from engine.transforms.step import Step, write

__all__ = [
    "NAMESPACES",
    "XPathCondition",
    "XPathRead",
    "Xslt",
    "apply_stylesheet",
    "compile_stylesheet",
    "compile_xpath",
    "xpath_text",
]

#: The prefixes an XPath expression may use.
NAMESPACES = {"hl7": NAMESPACE}

_XSL = "http://www.w3.org/1999/XSL/Transform"
# Stylesheets read files (xsl:include, document()) but never the network, and write nothing.
_ACCESS = etree.XSLTAccessControl(read_network=False, write_file=False, create_dir=False, write_network=False)
_SHOWN_CHARS = 60  # how much of an XPath result a filter's reason shows
_SAMPLE = etree.fromstring(f'<ADT_A01 xmlns="{NAMESPACE}"><MSH><MSH.1>|</MSH.1></MSH></ADT_A01>')


@lru_cache(maxsize=64)
def compile_xpath(expression: str) -> etree.XPath:
    """The compiled expression; ValueError naming the problem when it is not XPath 1.0."""
    try:
        compiled = etree.XPath(expression, namespaces=NAMESPACES)
        # libxml2 compiles some broken expressions ("count(", unknown functions) and fails them only
        # when they run: one run on a minimal message finds those at load, not on the first message.
        compiled(_SAMPLE)
    except etree.XPathError as exc:
        raise ValueError(f"invalid XPath {expression!r}: {exc}") from None
    return compiled


@lru_cache(maxsize=32)
def compile_stylesheet(source: bytes, base_url: str | None) -> tuple[etree.XSLT, frozenset[str]]:
    """The compiled stylesheet and the names of its top-level parameters; ValueError when it is none."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    try:
        document = etree.fromstring(source, parser, base_url=base_url)
        stylesheet = etree.XSLT(document, access_control=_ACCESS)
    except (etree.XMLSyntaxError, etree.XSLTParseError) as exc:
        raise ValueError(f"not a usable XSLT stylesheet: {exc}") from None
    declared = frozenset(param.get("name", "") for param in document.iterfind(f"{{{_XSL}}}param"))
    return stylesheet, declared


def apply_stylesheet(stylesheet: etree.XSLT, root: etree._Element, parameters: dict[str, str]):
    """The result tree of ``stylesheet`` on ``root``; TransformError with the stylesheet's own message."""
    try:
        result = stylesheet(root, **{k: etree.XSLT.strparam(v) for k, v in parameters.items()})
    except etree.XSLTApplyError as exc:
        raise TransformError(f"the stylesheet failed: {exc}") from None
    return result


def xpath_text(result: object) -> str:
    """An XPath result as text: a string or number as such, a boolean as true/false, nodes by the first."""
    if isinstance(result, bool):
        return "true" if result else "false"
    if isinstance(result, float):
        return str(int(result)) if result.is_integer() else repr(result)
    if isinstance(result, list):
        if not result:
            return ""
        first = result[0]
        return first.xpath("string()") if isinstance(first, etree._Element) else str(first)
    return str(result)


def _truth(result: object) -> bool:
    """XPath's boolean() of a result: non-empty node sets and strings, non-zero numbers."""
    if isinstance(result, float):
        return result == result and result != 0.0  # NaN is false
    return bool(result)


class Xslt(Step):
    """``xslt``: the message as v2.xml through a stylesheet whose output is v2.xml again, read back as ER7."""

    __slots__ = ("_stylesheet", "_parameters")

    def __init__(self, name: str, spec, tables):
        super().__init__(name, f"xslt {spec.origin}")
        self._stylesheet = spec.compiled
        self._parameters = dict(spec.parameters)

    def _apply(self, message: Message) -> Message:
        try:
            result = apply_stylesheet(self._stylesheet, to_element(message.to_text()), self._parameters)
        except TransformError as exc:
            raise self.error(str(exc)) from None
        root = result.getroot()
        if root is None:
            raise self.error("the stylesheet gave no XML element (to give text, use it on a destination)")
        return Message.parse(from_element(root))  # HL7Error (not v2.xml) is named by Step.apply


class XPathRead(Step):
    """``xpath``: write what an expression selects in the v2.xml (as text) to a field."""

    __slots__ = ("_expression", "_select", "_to")

    def __init__(self, name: str, spec, tables):
        super().__init__(name, f"xpath to {spec.to}")
        self._select = spec.select
        self._expression = compile_xpath(spec.select)
        self._to = spec.to

    def _apply(self, message: Message) -> Message:
        try:
            result = self._expression(to_element(message.to_text()))
        except etree.XPathEvalError as exc:
            raise self.error(f"{self._select!r} failed: {exc}") from None
        write(message, self._to, xpath_text(result))
        return message


class XPathCondition:
    """The ``xpath`` filter's condition: XPath's boolean() of the expression on the message's v2.xml."""

    __slots__ = ("_source", "_expression")

    def __init__(self, expression: str):
        self._source = expression
        self._expression = compile_xpath(expression)

    def _result(self, message: Message) -> object:
        try:
            return self._expression(to_element(message.to_text()))
        except HL7Error as exc:
            raise TransformError(f"the message has no v2.xml form: {exc}") from None
        except etree.XPathEvalError as exc:
            raise TransformError(f"XPath {self._source!r} failed: {exc}") from None

    def holds(self, message: Message) -> bool:
        """True when the expression's value is true."""
        return _truth(self._result(message))

    def why(self, message: Message) -> str:
        """The expression, its value and whether it is true."""
        result = self._result(message)
        shown = xpath_text(result)[:_SHOWN_CHARS]
        return f"XPath {self._source!r} is {'true' if _truth(result) else 'false'} ({shown!r})"
