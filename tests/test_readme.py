"""README's "Try it" works as written: each command runs, and prints what its `# prints:` comment says.

The block is run in a copy of the repository's config and samples, on free ports (the config's and
the commands' ports rewritten alike), with the EMR and the PMS played by recording partners.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from tests.fakes.harness import free_port
from tests.fakes.partner import RecordingPartner
from tests.fakes.process import wait_for_port

REPO = Path(__file__).resolve().parents[1]


def try_it_commands() -> list[tuple[str, list[str]]]:
    """(command, the pieces its `# prints:` comment says it prints) of each line of the block."""
    readme = (REPO / "README.md").read_text()
    block = re.search(r"^## Try it\n.*?^```sh\n(.*?)^```", readme, re.S | re.M).group(1)
    commands = []
    for line in block.splitlines():
        found = re.fullmatch(r"(.*?)(?:\s{2,}#\s*(.*))?", line)
        command, comment = found.group(1), (found.group(2) or "").strip()
        expected = comment.removeprefix("prints: ").split(" … ") if comment.startswith("prints: ") else []
        commands.append((command.strip(), expected))
    return commands


def test_samples_carry_control_ids_and_the_bundled_senders():
    """Every sample has an MSH-10 and an MSH-3 of the folder it is in (pms, emr, lab)."""
    samples = sorted((REPO / "samples").rglob("*.hl7"))
    assert len(samples) >= 6
    for sample in samples:
        msh = sample.read_bytes().split(b"\r", 1)[0].decode().split("|")
        assert msh[9], f"{sample} has no MSH-10"
        assert msh[2] == sample.parent.name.upper(), sample


def test_try_it_block_runs_as_written(tmp_path):
    """Each command of README's "Try it" exits 0 and prints what the README says it prints."""
    ports = {old: free_port() for old in ("2575", "2576", "2577", "8080")}

    def local(text: str) -> str:
        return re.sub(r"\b(2575|2576|2577|8080)\b", lambda m: str(ports[m.group(1)]), text)

    (tmp_path / "channels.yaml").write_text(local((REPO / "channels.yaml").read_text()))
    shutil.copytree(REPO / "samples", tmp_path / "samples")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "hl7engine"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m engine "$@"\n')
    shim.chmod(0o755)
    emr, pms = RecordingPartner(), RecordingPartner()
    env = {
        **{k: v for k, v in os.environ.items() if k != "HL7ENGINE_DB_URL"},
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
        "EMR_ADT_PORT": str(emr.port),
        "EMR_RESULTS_PORT": str(emr.port),
        "PMS_SIU_PORT": str(pms.port),
    }
    background = []
    try:
        for command, expected in try_it_commands():
            command = local(command)
            if command.endswith("&"):
                process = subprocess.Popen(
                    ["bash", "-c", f"exec {command[:-1]}"],
                    cwd=tmp_path,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
                background.append(process)
                for port in ("2575", "2576", "2577"):
                    wait_for_port(ports[port], process)
                continue
            result = subprocess.run(
                ["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
            )
            assert result.returncode == 0, f"{command}: {result.stderr}"
            for piece in expected:
                assert piece in result.stdout, f"{command}: {piece!r} not in:\n{result.stdout}"
            if command.startswith("hl7engine patient find"):
                # "the one patient the record made of the PMS's, the EMR's and the lab's identifiers"
                assert len(result.stdout.splitlines()) == 1, f"{command}: not one patient:\n{result.stdout}"
    finally:
        for process in background:
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=60)
        emr.close()
        pms.close()


def test_the_readme_names_only_channels_of_the_bundled_config():
    """Each channel a README command names (`--channel C`, `channel pause C`, `try C`) is in channels.yaml."""
    from engine.configstore import load_store_side

    channels = set(load_store_side(REPO / "channels.yaml", environ={}).channels)
    readme = (REPO / "README.md").read_text()
    named = re.findall(r"(?:--channel|hl7engine channel (?:pause|resume)|hl7engine try) ([\w-]+)", readme)
    assert named, "the pattern finds the README's channels"
    assert [name for name in named if name not in channels] == []
