"""engine/store/indexer.py: the content index kept up to date on the writer, shortly after intake."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor, task

from engine.store.indexer import ContentIndexer
from engine.store.reads import MessageQuery
from tests.fakes.messages import pms_message


def _named(n: int, name: str):
    return pms_message(n, raw=pms_message(n).raw.replace(b"DOE^JANE", name.encode()))


@pytest_twisted.inlineCallbacks
def test_messages_stored_while_it_runs_are_found_by_content_within_seconds(open_store):
    """Started, it indexes what was stored before in batches, then each new message within ``every``."""
    store = open_store()
    yield store.add([_named(n, "QUIXOTL^ANN") for n in range(1, 8)])
    indexer = ContentIndexer(store, reactor=reactor, every=0.05, batch=3)
    indexer.start(first_after=0)
    try:
        yield store.add([_named(9, "ZEBEDEE^ANN")])
        for _ in range(200):  # at most 10 s
            found = yield store.search(MessageQuery(text="ann"))
            if len(found) == 8:
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        assert [m.control_id for m in found] == ["CTRL9", *(f"CTRL{n}" for n in range(7, 0, -1))]
    finally:
        yield indexer.stop()


@pytest_twisted.inlineCallbacks
def test_a_process_without_the_jobs_lease_does_not_index(open_store):
    """``may_run`` false: nothing is indexed, and it asks again at each round."""
    store = open_store()
    yield store.add([_named(1, "QUIXOTL^ANN")])
    asked = []
    indexer = ContentIndexer(store, reactor=reactor, every=0.01, may_run=lambda: asked.append(1) or False)
    indexer.start(first_after=0)
    while len(asked) < 3:
        yield task.deferLater(reactor, 0.01, lambda: None)
    yield indexer.stop()
    assert (yield store.search(MessageQuery(text="quixotl"))) == []
