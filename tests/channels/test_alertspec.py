"""engine.channels.alertspec and ``alerts:`` in the config: rules, defaults, errors at their YAML path."""

from __future__ import annotations

import textwrap

import pytest

from engine.config import parse_config
from engine.errors import ConfigError

BASE = """
listeners:
  - name: main
    endpoint: "tcp:2575"
channels:
  - name: adt
    source: main
    accept: {types: ["*"]}
    destinations:
      - {name: emr, type: file, directory: out}
"""


def _parse(alerts: str):
    return parse_config(BASE + textwrap.dedent(alerts), source="channels.yaml")


def _problems(alerts: str) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        _parse(alerts)
    return [f"{p.path}: {p.message}" for p in raised.value.problems]


def test_rules_take_their_documented_defaults():
    """threshold per kind, a 5 minute window, and the log when notify is absent."""
    config = _parse(
        """
        alerts:
          - {name: failing, kind: destination_failing, channel: adt, destination: emr}
          - {name: errors, kind: errors}
          - name: hook
            kind: queue_depth
            threshold: 100
            notify:
              - {type: webhook, url: "http://127.0.0.1:9/hook"}
              - {type: email, sender: a@b.c, to: [d@e.f]}
        """
    )
    failing, errors, hook = config.alerts
    assert (failing.limit, failing.window_minutes, [t.type for t in failing.notify]) == (3.0, 5.0, ["log"])
    assert errors.limit == 1.0 and errors.channel is None
    webhook, email = hook.notify
    assert (webhook.timeout_seconds, email.host, email.port, email.starttls) == (10.0, "localhost", 25, False)


def test_wrong_rules_are_reported_at_their_path():
    """Unknown names, a missing threshold, a destination without channel, an unknown key: each at its path."""
    problems = _problems(
        """
        alerts:
          - {name: a, kind: queue_age}
          - {name: b, kind: errors, destination: emr}
          - {name: c, kind: errors, channel: lab}
          - {name: d, kind: errors, channel: adt, destination: lis}
          - {name: e, kind: no_traffic, listener: pms}
          - {name: e, kind: listener_down, colour: red}
        """
    )
    assert any(p.startswith("alerts[0]") and "queue_age needs a threshold" in p for p in problems)
    assert any(p.startswith("alerts[1]") and "give channel too" in p for p in problems)
    assert "alerts[2].channel: no channel named 'lab'" in problems
    assert "alerts[3].destination: channel 'adt' has no destination 'lis'" in problems
    assert "alerts[4].listener: no listener named 'pms'" in problems
    assert any(p.startswith("alerts[5].colour") for p in problems)
    assert "alerts[5].name: alert name 'e' is already used by alerts[4]" in problems
