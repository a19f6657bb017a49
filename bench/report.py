"""The report: the measured rows, engine-to-baseline ratios, each scenario's figures, the targets.

It also gives the machine and versions.

One Markdown text (printed and written to ``latest.md``) and one JSON document (``latest.json``)
carry the same figures.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.harness import QUIET_PERCENT, Row, Scenario, Verdict

BASELINES = ("python-hl7", "txhl7", "simple-hl7", "node-hl7-server", "ceiling")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _usable(row: Row) -> bool:
    """A row whose rate means something: it ran and its replies were right."""
    return row.status == "ok" and row.messages > 0 and row.errors == 0


def rows_table(rows: list[Row]) -> list[str]:
    lines = [
        "| system | conns | msg/s | p50 ms | p99 ms | max ms | errors | server CPU µs/msg | server CPU % |"
        " peak RSS MB | generator CPU % | other load % | note |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for row in rows:
        if row.status != "ok":
            lines.append(
                f"| {row.label} | {row.connections} | - | - | - | - | - | - | - | - | - | - |"
                f" {row.status}: {row.reason} |"
            )
            continue
        notes = []
        if row.errors:
            example = row.known_issue or (row.error_samples[0] if row.error_samples else "")
            notes.append(f"{row.errors:,} bad or missing ACKs" + (f": {example}" if example else ""))
        if "stored" in row.observed:
            stored = row.observed["stored"]
            notes.append(
                f"stored {stored:,} = acknowledged"
                if stored == row.acknowledged
                else f"stored {stored} ≠ acknowledged {row.acknowledged}"
            )
        if row.reason:
            notes.append(row.reason)
        if len(row.rate_runs) > 1:
            notes.append(
                "runs: " + ", ".join(f"{rate:,.0f}" for rate in row.rate_runs) + " msg/s; median shown"
            )
        if row.other_cpu_percent > QUIET_PERCENT:
            notes.append("noisy: other work on the machine during the window")
        cpu_per_message = (
            "-" if row.server_cpu_us_per_message is None else f"{row.server_cpu_us_per_message:,.0f}"
        )
        lines.append(
            f"| {row.label} | {row.connections} | {row.rate:,.0f} | {_ms(row.p50_ms)} | {_ms(row.p99_ms)} | "
            f"{_ms(row.max_ms)} | {row.errors:,} | {cpu_per_message} | {row.server_cpu_percent:.0f} | "
            f"{row.peak_rss_mb:.0f} | {row.generator_cpu_percent:.0f} | {row.other_cpu_percent:.0f} | "
            f"{'; '.join(notes)} |"
        )
    return lines


def ratio_table(rows: list[Row]) -> list[str]:
    """engine msg/s ÷ baseline msg/s, per engine configuration and connection count."""
    present = [b for b in BASELINES if any(r.system == b for r in rows)]
    engines = [r for r in rows if r.role == "engine"]
    if not engines or not present:
        return []
    labels = {r.system: r.label for r in rows}
    lines = [
        "| engine | conns | " + " | ".join(f"÷ {labels[b]}" for b in present) + " |",
        "|---|--:|" + "--:|" * len(present),
    ]
    for engine in engines:
        cells = []
        for baseline in present:
            other = next(
                (r for r in rows if r.system == baseline and r.connections == engine.connections), None
            )
            if other is None or not _usable(engine):
                cells.append("-")
            elif not _usable(other):
                cells.append(
                    "n/a (" + (other.status if other.status != "ok" else "its ACKs were wrong") + ")"
                )
            else:
                cells.append(f"{engine.rate / other.rate:.2f}")
        lines.append(f"| {engine.label} | {engine.connections} | " + " | ".join(cells) + " |")
    return lines


def figures_table(rows: list[Row], figures) -> list[str]:
    """The scenario's own figures of each measured row, one column per figure any row has."""
    shown = [(row, figures(row)) for row in rows if row.status == "ok"]
    columns = list(dict.fromkeys(name for _, values in shown for name in values))
    if not columns:
        return []
    lines = ["| system | conns | " + " | ".join(columns) + " |", "|---|--:|" + "---|" * len(columns)]
    for row, values in shown:
        lines.append(
            f"| {row.label} | {row.connections} | "
            + " | ".join(values.get(name, "-") for name in columns)
            + " |"
        )
    return lines


def verdicts(scenario: Scenario, results: dict[str, list[Row]]) -> list[Verdict]:
    """The performance targets the scenario is held to, checked against this run's rows."""
    return scenario.check(results.get(scenario.name, []), results) if scenario.check else []


def targets_table(checked: list[Verdict]) -> list[str]:
    lines = ["| target (docs/performance.md) | measured | met |", "|---|---|---|"]
    for verdict in checked:
        met = "n/a" if verdict.met is None else "yes" if verdict.met else "no"
        lines.append(f"| {verdict.target} | {verdict.measured} | {met} |")
    return lines if checked else []


def render(results: dict[str, list[Row]], scenarios: list[Scenario], meta: dict) -> str:
    """The whole report as Markdown."""
    out = [f"# hl7engine benchmark — {meta['started']}", ""]
    out += [f"Command: `{meta['command']}`", ""]
    repeat = meta["options"]["repeat"]
    runs = (
        f" Each row was run {repeat} times, in rounds; the figures are those of the run with the median rate."
        if repeat > 1
        else ""
    )
    out += [
        f"Each row: {meta['options']['warmup_seconds']:g} s warm-up,"
        f" then {meta['options']['seconds']:g} s measured"
        f" (at most {meta['options']['max_messages']:,} messages), one message in flight per connection,"
        " every ACK checked (MSA-1 AA/CA, MSA-2 = the control id sent)."
        f" A fresh server process per run.{runs}",
        "",
    ]
    for scenario in scenarios:
        out += [f"## {scenario.title}", ""]
        if scenario.pending:
            out += [f"not available yet: {scenario.pending}", ""]
            continue
        rows = results.get(scenario.name, [])
        out += rows_table(rows) + [""]
        ratios = ratio_table(rows)
        if ratios:
            out += ["Engine ÷ baseline (messages/s):", ""] + ratios + [""]
        own = figures_table(rows, scenario.figures) if scenario.figures else []
        if own:
            out += ["Scenario figures:", ""] + own + [""]
        targets = targets_table(verdicts(scenario, results))
        if targets:
            out += (
                ["Targets (durability: process, ACK after store; n/a: cannot be said from this run):", ""]
                + targets
                + [""]
            )
    machine = meta["machine"]
    out += ["## Machine and versions", ""]
    out += [
        f"- CPU: {machine['cpu']}, {machine['cores']} cores ({machine['cores_usable']} usable),"
        f" {machine['memory_gib']} GiB, Linux {machine['kernel']}",
        f"- Stores written to: {machine['data_filesystem']};"
        f" writing 4 KiB + fsync there takes {machine['fsync_ms']:.2f} ms (median)",
        f"- Python {meta['python']}, Node.js {meta['node']}",
    ]
    for name, version in sorted(meta["versions"].items()):
        out.append(f"- {name} {version}")
    out.append("")
    out += [
        "Columns: msg/s counts only correct ACKs in the measured window; latency is send to whole ACK"
        " received, on the load generator's side; server CPU is user + system time of the server process"
        " (all threads) over the window, % of one core; peak RSS is the server's VmHWM; other load is CPU"
        " used by anything but the server and the generator during the window (other work on the machine"
        " makes figures noisy when it is large).",
        "",
    ]
    return "\n".join(out)


def write(
    output: Path, text: str, results: dict[str, list[Row]], scenarios: list[Scenario], meta: dict
) -> tuple[Path, Path]:
    """latest.md and latest.json in ``output``."""
    output.mkdir(parents=True, exist_ok=True)
    markdown, document = output / "latest.md", output / "latest.json"
    markdown.write_text(text + "\n")
    payload = {
        **meta,
        "scenarios": [
            {
                "name": s.name,
                "title": s.title,
                "available": s.pending is None,
                "reason": s.pending,
                "rows": [r.to_json() for r in results.get(s.name, [])],
                "targets": [v.to_json() for v in verdicts(s, results)],
            }
            for s in scenarios
        ],
    }
    document.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return markdown, document
