"""Alert rules evaluated on a schedule: each fires once and clears once, its state kept in the store.

Every ``EVALUATE_SECONDS`` the process holding ``job:alerts`` (one process of those sharing the
store) reads the counts (engine.store.dashboard), the pauses and the rules' stored states, and
decides each rule's condition (``condition``, pure). A rule whose condition starts to hold fires;
one that stops holding clears. The new state is stored before anyone is told, so a restart
neither fires a rule again nor forgets that it fired. A notice names counts, names and reasons
(codes, causes), never message content.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from email.message import EmailMessage
from io import BytesIO

from twisted.application import service
from twisted.internet import defer, protocol
from twisted.logger import Logger
from twisted.mail.smtp import sendmail
from twisted.web.client import Agent, FileBodyProducer
from twisted.web.http_headers import Headers

from engine.channels.alertspec import AlertRule, EmailNotify, LogNotify, WebhookNotify
from engine.channels.leases import LOCAL_LEASES, Leases, job_key
from engine.channels.pausing import Controls
from engine.model import Status, utc_now
from engine.store.controls import AlertState
from engine.store.reads import DashboardCounts

__all__ = ["ALERTS_KEY", "EVALUATE_SECONDS", "AlertService", "Notifier", "alerts_json", "condition"]

log = Logger()

#: The lease of the alert job: one process of those sharing the store evaluates the rules.
ALERTS_KEY = job_key("alerts")
#: How often the rules are evaluated.
EVALUATE_SECONDS = 10.0


def _queues_of(rule: AlertRule, counts: DashboardCounts):
    return [
        (key, state)
        for key, state in sorted(counts.queues.items())
        if rule.channel in (None, key[0]) and rule.destination in (None, key[1])
    ]


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:g} min"


def condition(
    rule: AlertRule,
    counts: DashboardCounts,
    pauses: Mapping[tuple[str, str], object],
    listeners: Mapping[str, bool] | None,
) -> str | None:
    """What holds (a sentence for the notice) when the rule's condition does, else None.

    ``counts`` over the rule's window; ``pauses`` by (channel, destination); ``listeners``: whether
    each listener of this process is bound (None: this process runs no listener, so listener_down
    is not decided here).
    """
    limit = rule.limit
    queues = _queues_of(rule, counts)
    if rule.kind == "errors":
        if rule.destination is not None:
            errors = sum(state.settled.get(Status.ERROR, 0) for _, state in queues)
        else:
            errors = sum(
                by_status.get(Status.ERROR, 0)
                for channel, by_status in counts.channels.items()
                if rule.channel in (None, channel)
            )
        where = rule.channel or "all channels"
        if rule.destination is not None:
            where = f"{rule.channel}/{rule.destination}"
        return f"{errors} error(s) on {where} in {_minutes(rule.window_seconds)}" if errors >= limit else None
    if rule.kind == "queue_depth":
        over = [f"{c}/{d}: {state.depth} queued" for (c, d), state in queues if state.depth >= limit]
        return "; ".join(over) or None
    if rule.kind == "queue_age":
        over = [
            f"{c}/{d}: oldest queued {age:.0f} s ago"
            for (c, d), state in queues
            if state.oldest_queued_at is not None
            and (age := (counts.at - state.oldest_queued_at).total_seconds()) >= limit
        ]
        return "; ".join(over) or None
    if rule.kind == "destination_failing":
        failing = []
        for (c, d), state in queues:
            pause = pauses.get((c, d))
            if pause is not None and pause.halted_delivery is not None:
                failing.append(f"{c}/{d}: halted at delivery {pause.halted_delivery} ({pause.reason})")
            elif state.head_attempts >= limit:
                failing.append(
                    f"{c}/{d}: {state.head_attempts} failed attempt(s) in a row ({state.head_reason})"
                )
        return "; ".join(failing) or None
    if rule.kind == "no_traffic":
        if rule.listener is not None:
            received, where = counts.listeners.get(rule.listener, 0), f"listener {rule.listener}"
        else:
            received, where = sum(counts.channels.get(rule.channel, {}).values()), f"channel {rule.channel}"
        return f"no message on {where} in {_minutes(rule.window_seconds)}" if received == 0 else None
    # listener_down
    if listeners is None:
        return None
    names = [rule.listener] if rule.listener is not None else sorted(listeners)
    down = [name for name in names if not listeners.get(name, False)]
    return f"listener(s) not listening: {', '.join(down)}" if down else None


def notice(rule: AlertRule, state: AlertState) -> dict:
    """The JSON a webhook gets (and the facts an email and the log line tell)."""
    return {
        "rule": rule.name,
        "kind": rule.kind,
        "state": "firing" if state.firing else "cleared",
        "detail": state.detail,
        "channel": rule.channel,
        "destination": rule.destination,
        "listener": rule.listener,
        "fired_at": state.fired_at.isoformat() if state.fired_at else None,
        "cleared_at": state.cleared_at.isoformat() if state.cleared_at else None,
    }


class Notifier:
    """Tells a rule's firing or clearing to one target: a webhook (JSON POST), an SMTP server, the log."""

    def __init__(self, reactor):
        self.reactor = reactor

    def tell(self, target, rule: AlertRule, state: AlertState) -> defer.Deferred:
        """Fires once told (errbacks when the target refused or did not answer)."""
        body = notice(rule, state)
        if isinstance(target, WebhookNotify):
            return self._post(target, body)
        if isinstance(target, EmailNotify):
            return self._mail(target, body)
        if isinstance(target, LogNotify):
            emit = log.warn if state.firing else log.info
            emit("alert {rule} {state}: {detail}", rule=rule.name, state=body["state"], detail=state.detail)
            return defer.succeed(None)
        raise TypeError(f"no notifier for {type(target).__name__}")

    def _post(self, target: WebhookNotify, body: dict) -> defer.Deferred:
        agent = Agent(self.reactor, connectTimeout=target.timeout_seconds)
        d = agent.request(
            b"POST",
            target.url.encode("ascii"),
            Headers({b"content-type": [b"application/json"], b"user-agent": [b"hl7engine-alerts"]}),
            FileBodyProducer(BytesIO(json.dumps(body).encode())),
        )

        def answered(response):
            finished = defer.Deferred()
            response.deliverBody(_Discard(finished))  # read to its end, so the connection is freed
            return finished.addCallback(lambda _: _accepted(response.code, target.url))

        return d.addCallback(answered).addTimeout(target.timeout_seconds, self.reactor)

    def _mail(self, target: EmailNotify, body: dict) -> defer.Deferred:
        mail = EmailMessage()
        mail["From"] = target.sender
        mail["To"] = ", ".join(target.to)
        mail["Subject"] = f"[hl7engine] {body['state'].upper()}: {body['rule']}"
        mail.set_content(
            "\n".join(f"{name}: {value}" for name, value in body.items() if value is not None) + "\n"
        )
        return sendmail(
            target.host,
            target.sender,
            list(target.to),
            mail.as_bytes(),
            port=target.port,
            reactor=self.reactor,
            username=target.username.encode() if target.username else None,
            password=target.password.encode() if target.password else None,
            requireAuthentication=target.username is not None,
            requireTransportSecurity=target.starttls,
        )


class _Discard(protocol.Protocol):
    """Reads a response body to its end and drops it (a webhook's answer says nothing we need)."""

    def __init__(self, finished: defer.Deferred):
        self.finished = finished

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason=protocol.connectionDone) -> None:
        self.finished.callback(None)


def _accepted(code: int, url: str) -> None:
    if not 200 <= code < 300:
        raise RuntimeError(f"the webhook {url} answered HTTP {code}")


def alerts_json(rules: Sequence[AlertRule], states: Mapping[str, AlertState]) -> dict:
    """The body of ``GET /api/alerts``: each rule with its state."""
    shown = []
    for rule in rules:
        state = states.get(rule.name)
        shown.append(
            {
                "name": rule.name,
                "kind": rule.kind,
                "channel": rule.channel,
                "destination": rule.destination,
                "listener": rule.listener,
                "threshold": rule.limit,
                "window_minutes": rule.window_minutes,
                "notify": [target.type for target in rule.notify],
                "firing": bool(state and state.firing),
                "detail": state.detail if state else "",
                "fired_at": state.fired_at.isoformat() if state and state.fired_at else None,
                "cleared_at": state.cleared_at.isoformat() if state and state.cleared_at else None,
            }
        )
    return {"alerts": shown}


class AlertService(service.Service):
    """Evaluates ``rules()`` every ``every`` seconds while this process holds ALERTS_KEY."""

    def __init__(
        self,
        rules: Callable[[], Sequence[AlertRule]],
        controls: Controls,
        *,
        queues: Callable[[], Sequence[tuple[str, str]]],
        listeners: Callable[[], Mapping[str, bool] | None],
        reactor,
        leases: Leases = LOCAL_LEASES,
        clock: Callable[[], datetime] = utc_now,
        every: float | None = None,
        notifier: Notifier | None = None,
        observer: Callable[[str, dict], None] | None = None,
    ):
        """``observer`` is told ``alert`` (rule, firing) at each firing and clearing, and each rule's state
        at the first evaluation."""
        self.setName("alerts")
        self._rules = rules
        self.controls = controls
        self._queues = queues
        self._listeners = listeners
        self.reactor = reactor
        self.leases = leases
        self.clock = clock
        self.every = EVALUATE_SECONDS if every is None else every
        self.notifier = notifier or Notifier(reactor)
        self._timer = None
        self._running: defer.Deferred | None = None
        self._observe = observer or (lambda event, fields: None)
        self._told: set[str] = set()

    def startService(self) -> None:
        super().startService()
        self.leases.watch(ALERTS_KEY, self._schedule_now, lambda: None)  # evaluated once held

    @defer.inlineCallbacks
    def stopService(self):
        super().stopService()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if self._running is not None:
            yield self._running
        yield self.leases.unwatch(ALERTS_KEY)

    def _schedule_now(self) -> None:
        self._schedule(0)

    def _schedule(self, delay: float) -> None:
        if not self.running:
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self.reactor.callLater(delay, self._run)

    def _run(self) -> None:
        if self._running is not None:
            return
        self._running = self.evaluate()
        self._running.addErrback(
            lambda failure: log.warn("alerts: evaluation failed: {error}", error=failure.getErrorMessage())
        )

        def done(_):
            self._running = None
            self._schedule(self.every)

        self._running.addBoth(done)

    @defer.inlineCallbacks
    def evaluate(self):
        """One round: decide every rule, store and tell what changed. Fires with the rules that changed."""
        rules = tuple(self._rules())
        if not rules or not self.leases.holds(ALERTS_KEY):
            return []
        now = self.clock()
        queues = self._queues()
        states = yield self.controls.alert_states()
        pauses = yield self.controls.pauses()
        by_window: dict[float, DashboardCounts] = {}
        for seconds in sorted({rule.window_seconds for rule in rules}):
            by_window[seconds] = yield self.controls.counts(now - timedelta(seconds=seconds), queues)
        listeners = self._listeners()
        changed = []
        for rule in rules:
            holds = condition(rule, by_window[rule.window_seconds], pauses, listeners)
            before = states.get(rule.name)
            firing = before is not None and before.firing
            if rule.name not in self._told:  # the state this process found (it may have fired before)
                self._told.add(rule.name)
                self._observe("alert", {"rule": rule.name, "firing": firing})
            if holds is not None and not firing:
                state = AlertState(rule.name, True, holds, now, before.cleared_at if before else None)
            elif holds is None and firing:
                state = AlertState(rule.name, False, before.detail, before.fired_at, now)
            else:
                continue
            # Stored first: told at most once, even when the engine stops right after.
            yield self.controls.set_alert_state(state)
            changed.append(rule.name)
            self._observe("alert", {"rule": rule.name, "firing": state.firing})
            for target in rule.notify:
                try:
                    yield self.notifier.tell(target, rule, state)
                except Exception as error:  # a target down must not keep the others from being told
                    log.warn(
                        "alert {rule}: could not tell {target}: {error}",
                        rule=rule.name,
                        target=target.type,
                        error=str(error) or type(error).__name__,
                    )
        return changed
