"""The running engine: a Twisted MultiService built from a Config, and its reload.

Services start in order (store, retention, channels, listeners) and stop in reverse: listeners finish the
messages in flight and close, channels finish their pass and close their destinations,
then the store flushes and closes. A reload applies a new config without touching what did not
change: a listener whose settings are unchanged keeps its connections (what changed is worked out
in engine.servicereload; the services besides channels and listeners are in engine.serviceparts).

An engine process has roles (``engine.serviceparts.ROLES``): intake (listeners, intakes, web),
processing (channel passes and processing at intake), delivery (the dispatchers and their
destinations), jobs (the retention pruner). One process with every role is the engine alone;
``hl7engine run --workers`` splits them over processes sharing the store, and the nodes of
``engine.cluster`` share it too: such processes divide the work by leases in the store
(StoreLeases) and wake one another (Wakeups).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from engine.channels.alerting import AlertService
from engine.channels.build import build_channel
from engine.channels.channel import Channel
from engine.channels.intake import Intake
from engine.channels.leases import LOCAL_LEASES, Leases
from engine.channels.overview import ListenerState, Overview
from engine.channels.passes import IDLE_POLL_SECONDS
from engine.channels.pausing import Controls, PauseWatch
from engine.channels.trial import try_message
from engine.channels.wakeups import Wakeups
from engine.config import Config, load_config
from engine.configengine import ClusterSettings
from engine.errors import ConfigError
from engine.listeners.file import FileSource
from engine.listeners.mllp import MLLPListenerService, MLLPServerFactory
from engine.listeners.tls import server_tls_options
from engine.serviceparts import (
    ALL_ROLES,
    RETENTION_KEY,
    ChannelsService,
    RetentionService,
    Running,
    check_roles,
    make_leases,
    make_wakeups,
)
from engine.servicereload import ReloadReport, channel_changes, engine_changes
from engine.store.indexer import ContentIndexer
from engine.store.message_store import MessageStore
from engine.store.pruner import Pruner
from engine.web.alerts import AlertsApi
from engine.web.audit import Auditor
from engine.web.channels import dashboard_resources
from engine.web.metrics import Metrics, fanout
from engine.web.passwords import redact_hashes
from engine.web.patients import patient_resources
from engine.web.record import record_resources
from engine.web.server import WebService
from engine.web.trying import TryApi

__all__ = ["Engine"]

log = Logger()


class Engine(service.MultiService):
    """The whole engine.

    Store, channels and listeners (and the web server with engine.http), built from one Config;
    only what ``roles`` asks for. ``reuse_port``: other intake processes take messages on the same
    ports (SO_REUSEPORT), so messages are stored RECEIVED for the processing role, never processed at
    intake. ``extra_intake``: this is one of those others: MLLP listeners only (the web server and
    the file listeners stay with the main process, which keeps the config history too).
    """

    def __init__(
        self,
        config: Config,
        reactor,
        *,
        store: MessageStore | None = None,
        observer=None,
        leases: Leases | None = None,
        wakeups: Wakeups | None = None,
        roles=ALL_ROLES,
        reuse_port: bool = False,
        extra_intake: bool = False,
        sharing: ClusterSettings | None = None,
    ):
        """``leases``: the work this process may do; by default all of it (LocalLeases), or, when
        other processes share the store, a share of it through the store (StoreLeases, started and
        stopped here).

        ``wakeups``: other processes share the store and wake this one (None: the engine alone, or
        the wake-ups made here, whose peers are the live processes the leases see).

        ``sharing``: how this process shares the store with the others of ``hl7engine run``
        (``--workers``, ``--intake-processes``); by default ``engine.cluster``, or, when this
        process does not have every role or shares its ports, this machine's name with the default
        lease and wake-ups on 127.0.0.1.
        """
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.roles = check_roles(roles)
        self.reuse_port = reuse_port
        self.extra_intake = extra_intake
        settings = config.engine
        if sharing is None and settings.cluster is None and (self.roles != ALL_ROLES or reuse_port):
            sharing = ClusterSettings()
        self.sharing = sharing or settings.cluster
        # Work left by other processes is found this often when a wake-up is lost.
        self._idle_poll_seconds = IDLE_POLL_SECONDS if self.sharing is None else self.sharing.poll_seconds
        # With engine.http, the metrics observe every event the intakes, channels and MLLP factories emit.
        self.metrics = Metrics() if settings.http is not None else None
        self.observer = fanout(observer, self.metrics.observe) if self.metrics is not None else observer
        self.store = store or MessageStore(
            config.store_url,
            reactor=reactor,
            durability=settings.store.durability,
            lock_timeout=settings.store.lock_timeout_seconds,
            max_batch=settings.store.max_batch,
            cipher=settings.store.cipher(),
            wal_max_bytes=settings.store.wal_max_bytes,
            shared=self.sharing is not None,  # other processes write the store too
            ahead="intake" in self.roles,  # senders wait for its commits: they go first at the file's lock
        )
        self.wakeups = wakeups
        if leases is None and self.sharing is not None:
            # One of several processes on the store: it listens for wake-ups before it registers where
            # (wake_address), and sends them to the live processes its leases saw at their last round.
            self.wakeups = wakeups or make_wakeups(
                self.sharing, reactor, lambda: self.leases.peers(), self.observer
            )
            self.leases = make_leases(
                self.sharing, self.store, reactor, self.wakeups, self.roles, self.observer
            )
            parts = (self.wakeups, self.leases)
        else:
            self.leases = leases or LOCAL_LEASES
            parts = (wakeups,) if wakeups is not None else ()
        Running("store", self.store, *parts).setServiceParent(self)
        self.pruner: Pruner | None = None
        self.indexer: ContentIndexer | None = None
        if "jobs" in self.roles:
            # The policy is read at each run, so a reload's retention_days apply from the next one.
            self.pruner = Pruner(
                self.store,
                lambda: self.config.retention_policy(),
                reactor=reactor,
                every=settings.store.prune_every_seconds,
                batch=settings.store.prune_batch,
                may_run=lambda: self.leases.holds(RETENTION_KEY),
            )
            # The content index: one process indexes, the one that prunes (the jobs' lease).
            self.indexer = ContentIndexer(
                self.store, reactor=reactor, may_run=lambda: self.leases.holds(RETENTION_KEY)
            )
            RetentionService(self.pruner, self.leases, self.indexer).setServiceParent(self)
        self.controls = Controls(self.store)
        # Every process that delivers applies the pauses in the store to its dispatchers.
        self.pause_watch: PauseWatch | None = None
        if "delivery" in self.roles:
            self.pause_watch = PauseWatch(
                self.controls, lambda: self.channels, reactor=reactor, observer=self.observer
            )
            self.pause_watch.setServiceParent(self)
        self.channels: dict[str, Channel] = {}
        self._build_channels(config)
        self.channels_service = ChannelsService(self.channels)
        self.channels_service.setServiceParent(self)
        self.listeners: dict[str, service.Service] = {}
        self.intakes: dict[str, Intake] = {}
        for listener in self._listeners_of(config):
            self._add_listener(config, listener)
        # A commit costs the same for one message as for several: let a group wait briefly for
        # connected senders.
        self.store.wait_for_senders(self._idle_senders)
        self.web: WebService | None = None
        if settings.http is not None and "intake" in self.roles and not extra_intake:
            # The patient API sits behind the same login; every patient shown or exported is audited.
            auditor = Auditor(self.store)
            patients = {
                **patient_resources(self.store, auditor=auditor),
                **record_resources(self.store, auditor=auditor),
            }
            dashboard = dashboard_resources(
                self.controls,
                self.overview,
                auditor,
                paused=self.pause_watch.poll_now if self.pause_watch is not None else lambda: None,
            )
            dashboard["api/alerts"] = AlertsApi(self.controls, lambda: self.config.alerts)

            # Trying a stored message on a channel uses the configuration running at the time.
            def run_trial(channel: str, raw: bytes):
                return try_message(self.config, channel, raw)

            trying = {b"try": lambda message: TryApi(message, run_trial)}
            self.web = WebService(
                settings,
                self.store,
                reactor=reactor,
                metrics=self.metrics,
                extra_resources={**patients, **dashboard},
                config_summary=lambda: self.config.summary(),
                unbound_listeners=self.unbound_listeners,
                message_actions=trying,
            )
            self.web.setServiceParent(self)
        self.alerts: AlertService | None = None
        if "jobs" in self.roles:
            # Added last, so stopped first: a listener stopping with the engine is not "down".
            # The rules are read at each round, so a reload's alerts apply from the next one.
            self.alerts = AlertService(
                lambda: self.config.alerts,
                self.controls,
                queues=lambda: [
                    (c.name, d.name) for c in self.config.channels if c.enabled for d in c.destinations
                ],
                listeners=self._listener_states,
                reactor=reactor,
                leases=self.leases,
                observer=self.observer,
            )
            self.alerts.setServiceParent(self)

    def overview(self) -> Overview:
        """The channels as configured now, and the state of this process's listeners (for the dashboard)."""
        states = []
        for listener in self.config.listeners:
            running = self.listeners.get(listener.name)
            if listener.type == "file":
                states.append(
                    ListenerState(
                        listener.name,
                        "file",
                        str(listener.directory),
                        running is not None and running.running,
                        None,
                        0,
                    )
                )
                continue
            bound = isinstance(running, MLLPListenerService) and running.bound
            states.append(
                ListenerState(
                    listener.name,
                    "mllp",
                    listener.endpoint,
                    bound,
                    running.port if bound else None,
                    len(running.factory.connections) if bound else 0,
                )
            )
        return Overview(channels=tuple(c for c in self.config.channels if c.enabled), listeners=tuple(states))

    def _listener_states(self) -> dict[str, bool] | None:
        """Whether each listener listens, for the alerts; None when this process runs no listener."""
        if "intake" not in self.roles or self.extra_intake:
            return None
        return {listener.name: listener.bound for listener in self.overview().listeners}

    def _build_channels(self, config: Config, names: set[str] | None = None) -> None:
        """Build the enabled channels of ``config`` (those named, or all) into ``self.channels``."""
        for index, channel in enumerate(config.channels):
            if channel.enabled and (names is None or channel.name in names):
                self.channels[channel.name] = build_channel(
                    config,
                    index,
                    store=self.store,
                    reactor=self.reactor,
                    channels=self.channels,
                    tables=config.lookup_tables,
                    observer=self.observer,
                    leases=self.leases,
                    wakeups=self.wakeups,
                    delivery="delivery" in self.roles,
                    idle_poll_seconds=self._idle_poll_seconds,
                    controls=self.controls if self.pause_watch is not None else None,
                )
                # Several processes take in this channel's messages (nodes, intake processes): only
                # the lease holder processes them, in id order.
                self.channels[channel.name].at_intake_allowed = (
                    config.engine.cluster is None and not self.reuse_port
                )

    def unbound_listeners(self) -> list[str]:
        """This process's listeners not serving now: an MLLP port not bound, a folder not polled."""
        return sorted(
            name
            for name, listener in self.listeners.items()
            if not listener.running or (isinstance(listener, MLLPListenerService) and not listener.bound)
        )

    def _listeners_of(self, config: Config):
        """The listeners this process runs: all with the intake role (an extra intake: the MLLP ones)."""
        if "intake" not in self.roles:
            return ()
        return tuple(item for item in config.listeners if not self.extra_intake or item.type != "file")

    def _idle_senders(self) -> int:
        return sum(
            listener.factory.idle_connections
            for listener in self.listeners.values()
            if isinstance(listener, MLLPListenerService)
        )

    def _add_listener(self, config: Config, listener) -> service.Service:
        intake = Intake(
            listener,
            config.channels_for(listener.name),
            self.store,
            config.engine,
            reactor=self.reactor,
            observer=self.observer,
            running=self.channels,
        )
        if listener.type == "file":
            listener_service = FileSource(
                listener.name, listener, intake, self.store, reactor=self.reactor, observer=self.observer
            )
        else:
            connection_observer = (
                self.metrics.connection_observer(listener.name) if self.metrics is not None else None
            )
            factory = MLLPServerFactory(
                intake,
                reactor=self.reactor,
                max_frame_bytes=listener.max_frame_bytes,
                idle_timeout=listener.idle_timeout_seconds,
                frame_timeout=listener.frame_timeout_seconds,
                observer=connection_observer,
            )
            tls = listener.tls
            tls_options = (
                None
                if tls is None
                else server_tls_options(
                    cert_file=tls.cert_file,
                    key_file=tls.key_file,
                    client_ca_file=tls.client_ca_file,
                    require_client_certificate=tls.require_client_certificate,
                )
            )
            listener_service = MLLPListenerService(
                listener.name,
                self.reactor,
                listener.endpoint,
                factory,
                shutdown_timeout=config.engine.shutdown_timeout_seconds,
                tls=tls_options,
                max_connections=listener.max_connections,
                allowed_networks=listener.allowed_networks,
                reuse_port=self.reuse_port,
            )
        listener_service.setServiceParent(self)
        self.listeners[listener.name] = listener_service
        self.intakes[listener.name] = intake
        return listener_service

    def startService(self) -> None:
        super().startService()
        for name, listener in self.listeners.items():
            if isinstance(listener, MLLPListenerService):
                log.info("listener {name} accepting MLLP on port {port}", name=name, port=listener.port)
            else:
                log.info(
                    "listener {name} polling {directory}",
                    name=name,
                    directory=str(listener.settings.directory),
                )
        if self.records_config:
            self.record_config(self.config, ReloadReport(["engine started"]))

    @property
    def records_config(self) -> bool:
        """Whether this process keeps the config history: the one that takes messages in (not an extra)."""
        return "intake" in self.roles and not self.extra_intake

    def record_config(self, config: Config, report: ReloadReport) -> defer.Deferred:
        """Keep the applied config in the store's history (when, what changed), without password hashes."""
        path = config.source_path
        content = redact_hashes(
            path.read_text(encoding="utf-8")
            if path is not None and path.exists()
            else config.model_dump_json(indent=2)
        )
        d = self.store.record_config(
            applied_at=datetime.now(UTC),
            source=str(path or "<memory>"),
            content=content,
            sha256=hashlib.sha256(content.encode("utf-8")).hexdigest(),
            changes=str(report),
            inputs=[source.as_record() for source in config.inputs],
        )
        d.addErrback(
            lambda failure: log.warn(
                "could not record the config history: {error}", error=failure.getErrorMessage()
            )
        )
        return d

    def reload_from_file(self, path: str | Path | None = None) -> defer.Deferred:
        """Load the config file again and apply it.

        On errors keep running the old config and log every problem.
        """
        path = path or self.config.source_path
        try:
            config = load_config(path)
        except ConfigError as error:
            for problem in error.problems:
                log.error("reload refused: {problem}", problem=str(problem))
            return defer.fail(error)
        return self.reload(config)

    def _rotate_keys(self, old: Config, new: Config, report: ReloadReport) -> None:
        """Apply new encryption keys at once: new content is sealed with the new current key.

        Switching encryption on or off, or another index key, waits for the next start.
        """
        before, after = old.engine.store.encryption, new.engine.store.encryption
        if after == before:
            return
        if before is None or after is None or after.index != before.index:
            report.restart_needed.append("encryption switched on or off, or its index key: at the next start")
            return
        self.store.cipher.rotate(new.engine.store.cipher())
        report.changes.append(f"encryption keys applied: new content sealed with key {after.key}")

    @defer.inlineCallbacks
    def reload(self, new: Config):
        """Apply a new config: restart only the channels and listeners that changed."""
        old = self.config
        report = ReloadReport()
        engine_changes(old, new, report)
        self._rotate_keys(old, new, report)
        changed_channels = channel_changes(old, new, report)

        # Channels: stop the changed ones, build their successors.
        for name in sorted(changed_channels):
            channel = self.channels.pop(name, None)
            if channel is not None:
                yield channel.stop()
        self._build_channels(new, changed_channels)
        if self.running:
            for channel in new.channels:
                if channel.name in changed_channels and channel.name in self.channels:
                    self.channels[channel.name].start()

        # Listeners: restart those whose own settings changed; the others keep their connections.
        old_listeners = {listener.name: listener for listener in self._listeners_of(old)}
        new_listeners = {listener.name: listener for listener in self._listeners_of(new)}
        for name in sorted(set(old_listeners) - set(new_listeners)) + sorted(
            n for n in new_listeners if n in old_listeners and old_listeners[n] != new_listeners[n]
        ):
            listener_service = self.listeners.pop(name)
            self.intakes.pop(name)
            yield defer.maybeDeferred(listener_service.disownServiceParent)
            report.changes.append(
                f"listener {name} {'removed' if name not in new_listeners else 'restarted'}"
            )
        for name, listener in new_listeners.items():
            if name in self.listeners:
                self.intakes[name].channels = new.channels_for(name)
                continue
            if name not in old_listeners:
                report.changes.append(f"listener {name} added")
            self._add_listener(new, listener)  # setServiceParent starts it when the engine runs
        self.config = new
        log.info("config reloaded: {report}", report=str(report))
        if self.records_config:
            yield self.record_config(new, report)
        return report
