"""Wake-ups between engine processes: a UDP datagram naming a key, so another process looks at the store now.

Processes sharing one store (worker processes, several nodes) do their work by keys
(``channel:<name>``, ``queue:<channel>/<destination>``, or ``urgent:<channel>/<destination>`` when
a sender waits for that queue; ``settled:<channel>`` once deliveries a sender may wait for
settled). A process that leaves work for a key sends the key to every other live process; the one
that does that work looks at the store at once instead of at its next poll. A wake-up carries no
data and nothing depends on its arrival: a datagram lost only delays the work until the poll.
Datagrams from any address that is not a peer are ignored (and counted), so nobody else can make
the engine read its store at will.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from engine.lograte import LogRate

__all__ = ["MAX_KEY_BYTES", "Peers", "Wakeups", "peer_address", "settled_key", "urgent_key"]

log = Logger()

#: A key longer than this is not sent (a programming error) and not taken when received.
MAX_KEY_BYTES = 511
#: At most one warning this often for each kind of trouble (a send that failed, a stranger's datagram).
WARN_SECONDS = 60.0

#: The peers' addresses, (IP, port): the other live processes of the store (asked on every send and receipt).
Peers = Callable[[], Sequence[tuple[str, int]]]
#: Told the key of a wake-up whose key starts with its prefix.
Subscriber = Callable[[str], None]


def peer_address(wake_address: str) -> tuple[str, int]:
    """(host, port) of a ``wake_address`` as ``Wakeups.address`` writes it: ``1.2.3.4:4012``, ``[::1]:4012``.

    Raises ValueError for anything else.
    """
    host, sep, port = wake_address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not a wake-up address (host:port): {wake_address!r}")
    return host.removeprefix("[").removesuffix("]"), int(port)


def urgent_key(channel: str, destination: str) -> str:
    """The key of a queue that a sender waits for (``queue_key``'s, hurried: its round does not gather)."""
    return f"urgent:{channel}/{destination}"


def settled_key(channel: str) -> str:
    """The key saying deliveries of ``channel`` settled: its after_processing senders may be answered."""
    return f"settled:{channel}"


class Wakeups(DatagramProtocol):
    """Sends keys to every peer over UDP, and calls the subscribers of the keys that arrive.

    Bursts are coalesced: the same key arriving several times in one reactor turn calls each of
    its subscribers once, at the end of that turn.
    """

    def __init__(
        self,
        *,
        reactor,
        peers: Peers,
        host: str = "127.0.0.1",
        port: int = 0,
        observer: Callable[[str, dict], None] | None = None,
    ):
        """``peers()``: the other processes' wake addresses, kept fresh by the caller (from ``nodes``)."""
        self.reactor = reactor
        self.host = host
        self.port = port
        self._peers = peers
        self._observe = observer or (lambda event, fields: None)
        self._listening = None
        self._subscribers: list[tuple[str, Subscriber]] = []
        self._due: dict[str, None] = {}  # keys arrived this turn, in order of arrival
        self._delivery = None
        self._warnings = LogRate(WARN_SECONDS, reactor.seconds)
        #: Datagrams ignored: from an address that is not a peer, or not a key.
        self.ignored = 0

    # -- life ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Listen on (host, port); port 0 takes any free one (``address`` says which)."""
        self._listening = self.reactor.listenUDP(self.port, self, interface=self.host)
        self.port = self._listening.getHost().port

    def stop(self):
        """Stop listening (fires once closed); keys due are dropped (they only hurry work along)."""
        if self._delivery is not None and self._delivery.active():
            self._delivery.cancel()
        self._delivery, self._due = None, {}
        listening, self._listening = self._listening, None
        return listening.stopListening() if listening is not None else None

    @property
    def address(self) -> str:
        """Where peers send wake-ups to this process: ``host:port`` (the nodes table's wake_address)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    # -- sending -------------------------------------------------------------------------------

    def send(self, key: str) -> None:
        """Send ``key`` to every peer but this process; never blocks, never raises for the network."""
        data = key.encode("ascii")
        if len(data) > MAX_KEY_BYTES:
            raise ValueError(f"a wake-up key is at most {MAX_KEY_BYTES} bytes, not {len(data)}")
        if self.transport is None:
            return
        own = (self.host, self.port)
        for peer in self._peers():
            if tuple(peer) == own:
                continue
            try:
                self.transport.write(data, tuple(peer))
            except OSError as error:  # no route, a full buffer: the peer's poll finds the work anyway
                self._warn("send_failed", "a wake-up could not be sent to {peer}: {error}", peer, error)

    # -- receiving -----------------------------------------------------------------------------

    def subscribe(self, prefix: str, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(key)`` on the reactor for each key arriving that starts with ``prefix``.

        Returns the function that ends the subscription.
        """
        subscription = (prefix, callback)
        self._subscribers.append(subscription)

        def unsubscribe() -> None:
            if subscription in self._subscribers:
                self._subscribers.remove(subscription)

        return unsubscribe

    def on_key(self, key: str, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` for each wake-up of exactly ``key``; returns the function that ends it."""

        def exactly(woken: str) -> None:
            if woken == key:
                callback()

        return self.subscribe(key, exactly)

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        """Note the key for the end of this turn, if a peer sent it and it is one."""
        if addr not in {tuple(peer) for peer in self._peers()}:
            self._ignore("stranger", "wake-up datagram(s) from {peer}, not a peer: ignored", addr)
            return
        if len(datagram) > MAX_KEY_BYTES or not datagram.isascii() or not datagram:
            self._ignore("not_a_key", "datagram(s) from {peer} that are not wake-up keys: ignored", addr)
            return
        self._due[datagram.decode("ascii")] = None
        if self._delivery is None:
            # callLater(0): after every datagram already readable in this turn has been read.
            self._delivery = self.reactor.callLater(0, self._deliver)

    def _deliver(self) -> None:
        keys, self._due, self._delivery = self._due, {}, None
        for key in keys:
            self._observe("wakeup", {"key": key})
            for prefix, callback in list(self._subscribers):
                if key.startswith(prefix):
                    try:
                        callback(key)
                    except Exception:
                        log.failure("a wake-up subscriber for {key} failed", key=key)

    # -- trouble -------------------------------------------------------------------------------

    def _ignore(self, kind: str, text: str, addr: tuple[str, int]) -> None:
        self.ignored += 1
        self._observe("wakeup_ignored", {"reason": kind})
        self._warn(kind, text, f"{addr[0]}:{addr[1]}")

    def _warn(self, kind: str, text: str, peer, error: BaseException | None = None) -> None:
        if (count := self._warnings.due(kind)) is not None:
            log.warn(text + " ({count} since the last warning)", peer=peer, error=error, count=count)
