"""``hl7engine demo``: the engine on a demo config, fed by simulated systems, until Ctrl-C.

The demo writes ``channels.yaml`` into its folder (SQLite under ``data/``, a console user ``demo``),
then runs, in this one process: the engine, the receivers it delivers to (an EMR, a PMS and a
billing system; billing fails for a while, then recovers) and the senders (``simulate``). Nothing
outlives it: SIGINT or SIGTERM stops the senders, then the engine (which finishes what is in
flight), then the receivers.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

#: Port offsets from --port-base: the engine's listeners and console, then the simulated receivers.
PMS, EMR, LAB, CONSOLE, EMR_IN, PMS_IN, BILLING_IN = 0, 1, 2, 3, 10, 11, 12
#: The demo's data folder (its engine.data_dir), inside the demo's folder.
DATA_DIR = "data"

DEMO_CONFIG = """\
# Written by `hl7engine demo`: the engine between a simulated PMS, EMR, lab and billing system.
engine:
  application: HL7ENGINE
  facility: DEMO-HUB
  data_dir: {data_dir}
  default_version: "2.5.1"
  http:
    endpoint: "tcp:{console}:interface=127.0.0.1"
    users: {{demo: "{password_hash}"}}
listeners:
  - {{name: pms, endpoint: "tcp:{pms}:interface=127.0.0.1"}}
  - {{name: emr, endpoint: "tcp:{emr}:interface=127.0.0.1"}}
  - {{name: lab, endpoint: "tcp:{lab}:interface=127.0.0.1"}}
tables:
  wards: {{inline: {{"4N": NORTH-4, "5S": SOUTH-5, ER: EMERGENCY}}}}
channels:
  - name: pms-adt
    source: pms
    accept: {{types: [ADT], senders: [{{application: PMS}}]}}
    transforms:
      - map: {{field: PV1-3.1, table: wards, on_miss: keep}}
    destinations:
      - {{name: emr, type: mllp, host: 127.0.0.1, port: {emr_in}}}
      - {{name: record, type: record}}
  - name: pms-siu
    source: pms
    accept: {{types: [SIU], senders: [{{application: PMS}}]}}
    destinations:
      - {{name: emr, type: mllp, host: 127.0.0.1, port: {emr_in}}}
      - {{name: record, type: record}}
  - name: pms-dft
    source: pms
    accept: {{types: [DFT], senders: [{{application: PMS}}]}}
    destinations:
      - name: billing
        type: mllp
        host: 127.0.0.1
        port: {billing_in}
        queue: {{max_attempts: null, retry_initial_seconds: 1, retry_max_seconds: 4}}
      - {{name: record, type: record}}
  - name: emr-adt
    source: emr
    accept: {{types: [ADT], senders: [{{application: EMR}}]}}
    destinations:
      - {{name: pms, type: mllp, host: 127.0.0.1, port: {pms_in}}}
      - {{name: record, type: record}}
  - name: lab-oru
    source: lab
    accept: {{types: ["ORU^R01"], senders: [{{application: LAB}}]}}
    destinations:
      - {{name: emr, type: mllp, host: 127.0.0.1, port: {emr_in}}}
      - {{name: record, type: record}}
"""


def write_demo_config(folder: Path, port_base: int, password_hash: str) -> Path:
    """The demo's channels.yaml in ``folder`` (created), on ports from ``port_base``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "channels.yaml"
    offsets = dict(pms=PMS, emr=EMR, lab=LAB, console=CONSOLE, emr_in=EMR_IN, pms_in=PMS_IN)
    ports = {name: port_base + offset for name, offset in {**offsets, "billing_in": BILLING_IN}.items()}
    text = DEMO_CONFIG.format(password_hash=password_hash, data_dir=DATA_DIR, **ports)
    path.write_text(text)
    return path


@click.command()
@click.option(
    "--dir", "folder", default="hl7engine-demo", show_default=True, type=click.Path(file_okay=False)
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0.1, max=200),
    default=2.0,
    show_default=True,
    help="Messages a second, all senders together.",
)
@click.option(
    "--port-base",
    type=click.IntRange(1024, 65000),
    default=21400,
    show_default=True,
    help="Listeners on this port and the next two, the console on the third; receivers from +10.",
)
@click.option(
    "--fail-after",
    type=click.FloatRange(min=0),
    default=20.0,
    show_default=True,
    help="Seconds until the billing system starts failing.",
)
@click.option(
    "--fail-for",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds it fails (answers AR, 'send again later') before it recovers.",
)
def demo(folder: str, rate: float, port_base: int, fail_after: float, fail_for: float) -> None:
    """Run the engine on a demo config with simulated PMS, EMR, lab and billing systems; Ctrl-C stops all."""
    from twisted.application.service import MultiService
    from twisted.internet import defer, reactor, threads
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    from engine.cli.app import load_config_or_exit
    from engine.cli.running import hold_data_folder, stop_on_signals
    from engine.cli.simulate import Receiver, Senders, Story
    from engine.listeners.mllp import MLLPListenerService, MLLPServerFactory
    from engine.service import Engine
    from engine.web.passwords import hash_password

    # Before its config is written again: a second demo, or `run` of its config, stops here.
    lock = hold_data_folder(Path(folder) / DATA_DIR)  # noqa: F841  (held while the demo runs)
    # A demo password: few iterations, so the console logs in at once (the hash is in the demo's file).
    path = write_demo_config(Path(folder), port_base, hash_password("demo", iterations=1000))
    config = load_config_or_exit(str(path))
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr), [predicate])], redirectStandardIO=False
    )
    started: list[float] = []  # when the engine was up: billing's failure counts from then

    def billing_failing() -> bool:
        return bool(started) and fail_after <= reactor.seconds() - started[0] < fail_after + fail_for

    receivers = [
        (EMR_IN, Receiver("EMR")),
        (PMS_IN, Receiver("PMS")),
        (BILLING_IN, Receiver("BILLING", failing=billing_failing)),
    ]
    services = [
        MLLPListenerService(
            f"demo-{receiver.name.lower()}",
            reactor,
            f"tcp:{port_base + offset}:interface=127.0.0.1",
            MLLPServerFactory(receiver, reactor=reactor, max_frame_bytes=1 << 20, idle_timeout=None),
            shutdown_timeout=2.0,
        )
        for offset, receiver in receivers
    ]
    # Started in order, stopped in reverse: the receivers outlive the engine's last deliveries.
    hub = MultiService()
    for service in services:
        service.setServiceParent(hub)
    Engine(config, reactor).setServiceParent(hub)
    ports = {"PMS": port_base + PMS, "EMR": port_base + EMR, "LAB": port_base + LAB}
    senders = Senders(Story(), ports, rate, echo=lambda line: click.echo(line, err=True))
    failed: list[Exception] = []

    def start() -> None:
        stop = stop_on_signals(reactor)
        try:
            hub.startService()
        except Exception as exc:  # a port in use: say so and stop
            failed.append(exc)
            click.echo(f"hl7engine demo: cannot start: {exc}", err=True)
            stop()
            return
        started.append(reactor.seconds())
        senders.start()
        click.echo(
            f"demo: console http://127.0.0.1:{port_base + CONSOLE}/ (user demo, password demo);"
            f" store and config in {path.parent}; {rate:g} message(s)/s from PMS, EMR and LAB;"
            f" billing fails after {fail_after:g} s for {fail_for:g} s. Ctrl-C stops."
        )
        report(False)

    def report(was_failing: bool) -> None:
        now_failing = billing_failing()
        if now_failing != was_failing:
            state = "is failing (AR, send again later)" if now_failing else "recovered"
            click.echo(f"demo: billing {state}")
        reactor.callLater(1.0, report, now_failing)

    @defer.inlineCallbacks
    def shutdown():
        # Off the reactor: a sender may be waiting for an ACK the engine gives on the reactor.
        yield threads.deferToThread(senders.stop)
        if hub.running:
            yield hub.stopService()
        counts = ", ".join(f"{system} {n}" for system, n in sorted(senders.sent.items()))
        click.echo(f"demo: stopped; sent {sum(senders.sent.values())} message(s) ({counts or 'none'})")

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", shutdown)
    reactor.run()  # until SIGINT or SIGTERM (stop_on_signals)
    if failed:
        sys.exit(1)
