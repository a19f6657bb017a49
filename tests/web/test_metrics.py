"""engine/web/metrics.py: events become Prometheus counters; a running engine's /metrics follows traffic."""

from __future__ import annotations

import time

import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor, task
from twisted.internet.task import deferLater

from engine.errors import StoreError
from engine.hl7.ack import parse_reply
from engine.hl7.mllp import frame
from engine.listeners.client import MLLPClient
from engine.web.metrics import Metrics, fanout
from tests.fakes.harness import in_thread, make_config, start_engine
from tests.fakes.web import USERS, fetch


def value(metrics: Metrics, name: str, **labels) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_intake_events_count_received_rejected_and_duplicates():
    """accepted, duplicate, rejected count as received by listener and ACK; a too-long frame just rejected."""
    metrics = Metrics()
    metrics.observe("accepted", {"listener": "pms", "code": "AA", "count": 1})
    metrics.observe("accepted", {"listener": "pms", "code": "AA", "count": 1})
    metrics.observe("accepted", {"listener": "pms", "code": "", "count": 1})  # an ACK stored, never answered
    metrics.observe("duplicate", {"listener": "pms", "code": "AA", "count": 1})
    metrics.observe("rejected", {"listener": "pms", "code": "AR", "count": 1})
    metrics.observe("rejected", {"listener": "pms", "code": "AR", "reason": 207})  # too long: not stored
    metrics.observe("store_failed", {"listener": "pms"})
    assert value(metrics, "hl7engine_messages_received_total", listener="pms", ack_code="AA") == 3
    assert value(metrics, "hl7engine_messages_received_total", listener="pms", ack_code="none") == 1
    assert value(metrics, "hl7engine_messages_received_total", listener="pms", ack_code="AR") == 1
    assert value(metrics, "hl7engine_messages_rejected_total", listener="pms", ack_code="AR") == 2
    assert value(metrics, "hl7engine_messages_duplicate_total", listener="pms") == 1
    assert value(metrics, "hl7engine_store_failures_total", listener="pms") == 1


def test_channel_and_connection_events():
    """processed, delivery, empty frames and the MLLP listener's events land on their counters and gauge."""
    metrics = Metrics()
    metrics.observe("processed", {"channel": "adt", "status": "QUEUED"})
    metrics.observe("delivery", {"channel": "adt", "destination": "emr", "outcome": "RETRY"})
    metrics.observe("delivery", {"channel": "adt", "destination": "emr", "outcome": "SENT"})
    factory_observer = metrics.connection_observer("pms")
    factory_observer("connection_opened", 1)
    factory_observer("connection_opened", 1)
    factory_observer("connection_closed", 1)
    factory_observer("bytes_discarded", 12)
    factory_observer("frame_too_long", 1)
    factory_observer("connection_not_allowed", 1)
    factory_observer("connection_over_limit", 1)
    factory_observer("connection_over_limit", 1)
    factory_observer("frame_timeout", 1)
    factory_observer("tls_failed", 1)
    metrics.observe("empty_frame", {"listener": "pms"})
    metrics.observe("empty_frame", {"listener": "pms"})
    assert value(metrics, "hl7engine_messages_processed_total", channel="adt", status="QUEUED") == 1
    assert (
        value(metrics, "hl7engine_deliveries_total", channel="adt", destination="emr", outcome="RETRY") == 1
    )
    assert value(metrics, "hl7engine_deliveries_total", channel="adt", destination="emr", outcome="SENT") == 1
    assert value(metrics, "hl7engine_mllp_connections_open", listener="pms") == 1
    assert value(metrics, "hl7engine_mllp_connections_total", listener="pms") == 2
    assert value(metrics, "hl7engine_mllp_bytes_discarded_total", listener="pms") == 12
    assert value(metrics, "hl7engine_mllp_frames_too_long_total", listener="pms") == 1
    refused = "hl7engine_mllp_connections_refused_total"
    assert value(metrics, refused, listener="pms", reason="network") == 1
    assert value(metrics, refused, listener="pms", reason="max_connections") == 2
    assert value(metrics, "hl7engine_mllp_frame_timeouts_total", listener="pms") == 1
    assert value(metrics, "hl7engine_mllp_tls_failures_total", listener="pms") == 1
    assert value(metrics, "hl7engine_mllp_empty_frames_total", listener="pms") == 2


def test_the_leases_this_process_holds_and_loses():
    """leases_held sets the gauge (directly or as an event), lease_lost counts; both are in the exposition."""
    metrics = Metrics()
    assert value(metrics, "hl7engine_leases_held") == 0
    metrics.set_leases_held(3)
    assert value(metrics, "hl7engine_leases_held") == 3
    metrics.observe("leases_held", {"count": 1})
    metrics.observe("lease_lost", {"key": "queue:adt/emr"})
    metrics.observe("lease_lost", {"key": "channel:adt"})
    assert value(metrics, "hl7engine_leases_held") == 1
    assert value(metrics, "hl7engine_leases_lost_total") == 2
    body, _ = metrics.exposition()
    assert b"\nhl7engine_leases_held 1.0\n" in body and b"\nhl7engine_leases_lost_total 2.0\n" in body


def test_wake_ups_heard_by_kind_and_datagrams_ignored_by_reason():
    """A wake-up counts under its key's kind (never the key: no label per channel); ignored ones by reason."""
    metrics = Metrics()
    metrics.observe("wakeup", {"key": "channel:adt"})
    metrics.observe("wakeup", {"key": "queue:adt/emr"})
    metrics.observe("wakeup", {"key": "queue:lab/lis"})
    metrics.observe("wakeup_ignored", {"reason": "stranger"})
    assert value(metrics, "hl7engine_wakeups_total", kind="channel") == 1
    assert value(metrics, "hl7engine_wakeups_total", kind="queue") == 2
    assert value(metrics, "hl7engine_wakeups_total", kind="settled") is None
    assert value(metrics, "hl7engine_wakeups_ignored_total", reason="stranger") == 1


def test_unknown_or_malformed_events_never_raise():
    """An event the metrics do not know is ignored; one missing a field is logged, never raised."""
    metrics = Metrics()
    metrics.observe("something_new", {"listener": "pms"})
    metrics.observe("processed", {"channel": "adt"})
    assert value(metrics, "hl7engine_messages_processed_total", channel="adt", status="QUEUED") is None


def test_fanout_reaches_every_observer_even_after_one_fails():
    """fanout passes each event to every observer in order; one raising does not stop the others."""
    seen = []

    def broken(event, fields):
        raise RuntimeError("bug")

    observe = fanout(None, broken, lambda event, fields: seen.append((event, dict(fields))))
    observe("accepted", {"listener": "pms"})
    assert seen == [("accepted", {"listener": "pms"})]


class _Depths:
    """A store whose queue_depths() answers from a script of results (a dict, or an exception)."""

    def __init__(self, *answers):
        self.answers = list(answers)

    def queue_depths(self):
        answer = self.answers.pop(0)
        return defer.fail(answer) if isinstance(answer, Exception) else defer.succeed(answer)


def test_queue_depths_are_polled_every_five_seconds():
    """Depths follow the store every 5 s; an emptied queue reads 0; a failed poll counts, polling goes on."""
    metrics = Metrics()
    clock = task.Clock()
    store = _Depths({("adt", "emr"): 3, ("adt", "lab"): 1}, {("adt", "emr"): 2}, StoreError("down"), {})
    metrics.start_polling(store, clock=clock)
    assert value(metrics, "hl7engine_queue_depth", channel="adt", destination="emr") == 3
    clock.advance(5)
    assert value(metrics, "hl7engine_queue_depth", channel="adt", destination="emr") == 2
    assert value(metrics, "hl7engine_queue_depth", channel="adt", destination="lab") == 0
    clock.advance(5)
    assert value(metrics, "hl7engine_queue_depth_poll_failures_total") == 1
    clock.advance(5)
    assert value(metrics, "hl7engine_queue_depth", channel="adt", destination="emr") == 0
    metrics.stop_polling()
    assert clock.getDelayedCalls() == []


def test_each_metrics_has_its_own_registry():
    """Two Metrics never share counters (nothing goes to prometheus_client's global registry)."""
    first, second = Metrics(), Metrics()
    first.observe("store_failed", {"listener": "pms"})
    assert value(second, "hl7engine_store_failures_total", listener="pms") is None


ENGINE_CONFIG = """
engine:
  application: HUB
  facility: TEST
  data_dir: {data_dir}
  store:
    url: {store_url}
  http:
    endpoint: "tcp:0:interface=127.0.0.1"
    users:
      alice: "%s"
listeners:
  - name: main
    endpoint: "tcp:0:interface=127.0.0.1"
    max_frame_bytes: {max_frame_bytes}
channels:
  - name: adt-files
    source: main
    accept:
      types: ["ADT"]
    destinations:
      - name: archive
        type: file
        directory: %s
"""

ADT = (
    "MSH|^~\\&|PMS|CLINIC|HUB|TEST|20260101120000||ADT^A04^ADT_A01|{cid}|P|2.5.1\r"
    "PID|1||1^^^PMS^MR||DOE^JOHN\r"
)


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _talk(port: int) -> list[str]:
    """Two ADTs, an ORU no channel takes, stray bytes and an oversized frame, over two connections."""
    with MLLPClient("127.0.0.1", port, timeout=20) as client:
        codes = [parse_reply(client.request(ADT.format(cid=cid).encode())).code for cid in ("M1", "M2")]
        codes.append(
            parse_reply(
                client.request(ADT.format(cid="M3").replace("ADT^A04^ADT_A01", "ORU^R01").encode())
            ).code
        )
        client.sock.sendall(b"stray")
        codes.append(parse_reply(client.request(ADT.format(cid="M4").encode())).code)
    with MLLPClient("127.0.0.1", port, timeout=20) as client:
        client.sock.sendall(frame(ADT.format(cid="BIG").encode() + b"X" * 2048))
        codes.append(parse_reply(client.receive()).code)
    return codes


@pytest_twisted.inlineCallbacks
def test_metrics_move_when_messages_arrive_over_mllp(tmp_path):
    """A running engine with engine.http counts what its MLLP listener, intake and channel did on /metrics."""
    text = ENGINE_CONFIG % (USERS["alice"], tmp_path / "out")
    engine = start_engine(make_config(tmp_path, max_frame_bytes=1024, text=text))
    try:
        codes = yield in_thread(_talk, engine.listeners["main"].port)
        assert codes == ["AA", "AA", "AR", "AA", "AR"]
        url = f"http://127.0.0.1:{engine.web.port}/metrics"
        deadline = time.monotonic() + 15
        while True:
            response = yield in_thread(fetch, url)
            samples = _samples(response.body.decode())
            delivered = samples.get(
                (
                    "hl7engine_deliveries_total",
                    (("channel", "adt-files"), ("destination", "archive"), ("outcome", "SENT")),
                ),
                0,
            )
            closed = samples.get(("hl7engine_mllp_connections_open", (("listener", "main"),))) == 0
            if (delivered == 3 and closed) or time.monotonic() > deadline:
                break
            yield deferLater(reactor, 0.05, lambda: None)
        assert response.status == 200
        main = (("listener", "main"),)
        assert samples[("hl7engine_messages_received_total", (("ack_code", "AA"), *main))] == 3
        assert samples[("hl7engine_messages_received_total", (("ack_code", "AR"), *main))] == 1
        assert samples[("hl7engine_messages_rejected_total", (("ack_code", "AR"), *main))] == 2
        assert samples[("hl7engine_mllp_connections_total", main)] == 2
        assert samples[("hl7engine_mllp_connections_open", main)] == 0
        assert samples[("hl7engine_mllp_bytes_discarded_total", main)] >= len(
            b"stray"
        )  # and what followed the oversized frame's limit
        assert samples[("hl7engine_mllp_frames_too_long_total", main)] == 1
        assert (
            samples[("hl7engine_messages_processed_total", (("channel", "adt-files"), ("status", "QUEUED")))]
            == 3
        )
        assert delivered == 3
        assert b"DOE" not in response.body and b"M1" not in response.body  # counts and names, never content
    finally:
        yield engine.stopService()
