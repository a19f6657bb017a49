"""The XML family: xslt and xpath transforms and the xpath filter, and their config errors at YAML paths."""

from __future__ import annotations

from engine.hl7.message import Message
from engine.transforms.filters import build_filters
from engine.transforms.spec import FilterSpec
from engine.transforms.xml import compile_stylesheet
from tests.fakes.config import parse, problems
from tests.transforms.steps import failure, run

IDENTITY = (
    '<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">'
    '<xsl:template match="@*|node()"><xsl:copy><xsl:apply-templates select="@*|node()"/></xsl:copy>'
    "</xsl:template></xsl:stylesheet>"
)
FACILITY = (
    '<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform"'
    ' xmlns:hl7="urn:hl7-org:v2xml"><xsl:param name="facility"/>'
    '<xsl:template match="@*|node()"><xsl:copy><xsl:apply-templates select="@*|node()"/></xsl:copy>'
    "</xsl:template>"
    '<xsl:template match="hl7:MSH.4/hl7:HD.1/text()"><xsl:value-of select="$facility"/></xsl:template>'
    "</xsl:stylesheet>"
)
ORU = Message.parse(
    "MSH|^~\\&|LAB|OLD|HUB|TEST|20260101||ORU^R01^ORU_R01|C1|P|2.5.1\r"
    "PID|1||P1^^^PMS^MR||DOE^JANE||19800101|F\r"
    "OBR|1|||CBC\r"
    "OBX|1|NM|WBC||7.1\r"
    "OBX|2|NM|HGB||13.2\r"
)
CONFIG = """\
listeners:
  - name: pms
    type: mllp
    endpoint: "tcp:2575:interface=127.0.0.1"
channels:
  - name: c
    source: pms
    accept: {{types: ['*']}}
{stages}
"""


def test_xslt_rewrites_the_message_through_v2_xml_with_its_parameters():
    """An xslt transform runs on the v2.xml with its YAML parameters; its v2.xml output is the new message."""
    result = run(ORU, {"xslt": {"inline": FACILITY, "parameters": {"facility": "NEW"}}})
    assert result.get("MSH-4") == "NEW"
    assert result.to_text() == ORU.to_text().replace("|OLD|", "|NEW|")


def test_xslt_whose_output_is_no_v2_message_is_a_transform_error():
    """A stylesheet giving something other than a v2.xml message fails the message, naming the transform."""
    other = IDENTITY.replace('match="@*|node()"><xsl:copy>', 'match="/"><other><xsl:copy>').replace(
        "</xsl:copy></xsl:template>", "</xsl:copy></other></xsl:template>", 1
    )
    reason = failure(ORU, {"xslt": {"inline": other}})
    assert reason.startswith("channels[0].transforms[0] (xslt inline): ") and "MSH" in reason


def test_xpath_reads_a_value_into_a_field():
    """An xpath transform writes what its expression gives (a count, a string) to its field."""
    result = run(
        ORU,
        {"xpath": {"select": "count(//hl7:OBX)", "to": "ZXP-1"}},
        {"xpath": {"select": "//hl7:OBX[hl7:OBX.3/hl7:CE.1='HGB']/hl7:OBX.5", "to": "ZXP-2"}},
    )
    assert (result.get("ZXP-1"), result.get("ZXP-2")) == ("2", "13.2")


def test_xpath_filter_passes_or_says_why_not():
    """An xpath filter passes when boolean() of its expression is true; otherwise the reason quotes it."""
    female, male = build_filters(
        [FilterSpec.model_validate({"xpath": f"//hl7:PID/hl7:PID.8 = '{sex}'"}) for sex in "FM"], path="f"
    )
    assert female.check(ORU) is None
    assert male.check(ORU) == "f[1]: XPath \"//hl7:PID/hl7:PID.8 = 'M'\" is false ('false')"


def test_bad_xpath_and_xslt_are_reported_at_their_yaml_paths(tmp_path):
    """A bad XPath, a stylesheet that does not compile, an unknown parameter: each at its path and line."""
    (tmp_path / "broken.xsl").write_text("<xsl:stylesheet")
    inline = FACILITY.replace("'", "&apos;")
    stages = (
        "    filters:\n"
        '      - xpath: "//hl7:PID["\n'
        "    transforms:\n"
        "      - xslt: {stylesheet: broken.xsl}\n"
        f"      - xslt: {{inline: '{inline}', parameters: {{nope: x}}}}\n"
        '      - xpath: {select: "count(", to: ZXP-1}\n'
    )
    found = problems(CONFIG.format(stages=stages), base_dir=tmp_path)
    assert [(path, line) for path, line, _ in found] == [
        ("channels[0].filters[0].xpath", 10),
        ("channels[0].transforms[0].xslt", 12),
        ("channels[0].transforms[1].xslt", 13),
        ("channels[0].transforms[2].xpath.select", 14),
    ]
    messages = [message for _, _, message in found]
    assert "invalid XPath '//hl7:PID['" in messages[0]
    assert "not a usable XSLT stylesheet" in messages[1]
    assert (
        "parameters nope are not declared by the stylesheet (its top-level xsl:param: facility)"
        in messages[2]
    )


def test_a_stylesheet_file_is_read_relative_to_the_config_and_compiled_once_per_load(tmp_path):
    """stylesheet: names a file next to the config; it is compiled once at load and kept compiled."""
    (tmp_path / "facility.xsl").write_text(FACILITY)
    stages = "    transforms:\n      - xslt: {stylesheet: facility.xsl, parameters: {facility: X}}\n"
    before = compile_stylesheet.cache_info()
    config = parse(CONFIG.format(stages=stages), base_dir=tmp_path)
    spec = config.channels[0].transforms[0].xslt
    assert spec.stylesheet == tmp_path / "facility.xsl"
    assert spec.compiled is spec.compiled
    after = compile_stylesheet.cache_info()
    assert after.misses == before.misses + 1


def test_an_edited_stylesheet_file_makes_the_channel_differ_so_a_reload_rebuilds_it(tmp_path):
    """The same YAML over an edited stylesheet file gives a different channel (reload compares channels)."""
    (tmp_path / "s.xsl").write_text(FACILITY)
    stages = "    transforms:\n      - xslt: {stylesheet: s.xsl}\n"
    first = parse(CONFIG.format(stages=stages), base_dir=tmp_path).channels[0]
    again = parse(CONFIG.format(stages=stages), base_dir=tmp_path).channels[0]
    (tmp_path / "s.xsl").write_text(IDENTITY)
    edited = parse(CONFIG.format(stages=stages), base_dir=tmp_path).channels[0]
    assert (first == again, first == edited) == (True, False)
