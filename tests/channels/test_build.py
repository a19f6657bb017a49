"""engine.channels.build: the class of each destination by its settings' type, and where queues journal."""

from __future__ import annotations

import pytest
from twisted.internet import reactor

from engine.channels.build import build_channel, build_destination
from engine.channels.destinations.file import FileDestination
from engine.channels.destinations.http import HTTPDestination
from engine.channels.destinations.mllp import MLLPDestination
from engine.channels.destinations.spec import FileSettings, HttpDestinationSettings, MllpSettings
from engine.channels.journal import DeliveryJournal, StoreJournal
from engine.channels.passes import IDLE_POLL_SECONDS
from engine.config import parse_config
from engine.configtypes import Frozen


class ChannelFileDestination(FileSettings):
    """How the channel configuration may extend a settings model with its own keys."""

    name: str


@pytest.mark.parametrize(
    ("settings", "kind"),
    [
        (MllpSettings(host="127.0.0.1", port=2575), MLLPDestination),
        (FileSettings(directory="/tmp/out"), FileDestination),
        (ChannelFileDestination(directory="/tmp/out", name="archive"), FileDestination),
        (HttpDestinationSettings(url="http://127.0.0.1/hl7"), HTTPDestination),
    ],
)
def test_each_settings_type_builds_its_destination(settings, kind):
    """Each settings model (or a subclass of it) builds its destination class, named as asked."""
    destination = build_destination("out", settings, reactor=reactor)
    assert isinstance(destination, kind)
    assert destination.name == "out"


def test_unknown_settings_are_refused():
    """Settings of no destination type are a TypeError, not a silent default."""

    class Other(Frozen):
        pass

    with pytest.raises(TypeError):
        build_destination("out", Other(), reactor=reactor)


@pytest.mark.parametrize("poll", [None, 0.5])
def test_a_channel_and_its_dispatchers_look_every_idle_poll_seconds(tmp_path, poll):
    """Work another process left is found every idle_poll_seconds (the engine's) if its wake-up is lost."""
    yaml = f"""
engine:
  data_dir: {tmp_path / "data"}
listeners:
  - {{name: main, endpoint: "tcp:0:interface=127.0.0.1"}}
channels:
  - name: adt
    source: main
    accept: {{types: ["*"]}}
    destinations:
      - {{name: archive, type: file, directory: {tmp_path / "out"}}}
"""
    config = parse_config(yaml, source=str(tmp_path / "channels.yaml"))
    given = {} if poll is None else {"idle_poll_seconds": poll}
    channel = build_channel(config, 0, store=None, reactor=reactor, channels={}, tables={}, **given)
    expected = IDLE_POLL_SECONDS if poll is None else poll
    assert channel.idle_poll_seconds == expected
    assert [d.idle_poll_seconds for d in channel.dispatchers.values()] == [expected]


@pytest.mark.parametrize(
    ("cluster", "kind"), [("", DeliveryJournal), ("  cluster: {node: a}\n", StoreJournal)]
)
def test_a_clustered_engine_keeps_each_queue_journal_in_the_store(tmp_path, cluster, kind):
    """With engine.cluster a queue may move to another node: its journal is its queue_journals row."""
    config = parse_config(
        "engine:\n  data_dir: data\n  store: {url: 'postgresql://postgres@127.0.0.1:5432/hl7engine'}\n"
        + cluster
        + 'listeners:\n  - name: main\n    endpoint: "tcp:0:interface=127.0.0.1"\n'
        + 'channels:\n  - name: out\n    source: main\n    accept: {types: ["*"]}\n'
        + "    destinations:\n      - {name: lab, type: mllp, host: 127.0.0.1, port: 2575}\n",
        base_dir=tmp_path,
    )
    channel = build_channel(config, 0, store=None, reactor=reactor, channels={}, tables={})
    journal = channel.dispatchers["lab"].journal
    assert isinstance(journal, kind)
    assert kind is DeliveryJournal or journal.key == "queue:out/lab"
