"""The transport llmens hands to faust: faust's aiokafka transport with :class:`GuardedConsumer`.

faust creates its consumer from ``app.transport``; :func:`install_transport` sets that public property to
a :class:`GuardedTransport` before any topic is declared, so no faust class is changed for anyone else in
the process.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from streams.faust_ext.commit_guard import GuardedConsumer
from streams.faust_ext.consumer_thread import GuardedConsumerThread
from streams.faust_ext.internals import require_internals

__all__ = ["GuardedTransport", "IdempotentProducer", "install_transport"]


class IdempotentProducer(faust_aiokafka.Producer):
    """faust's producer with acks=all and idempotence always (faust asks for them in transactions only):
    a retried send after a leader change then never writes a record twice."""

    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


class GuardedTransport(faust_aiokafka.Transport):
    """faust's aiokafka transport whose consumers are :class:`GuardedConsumer`, producers idempotent."""

    Consumer = GuardedConsumer
    Producer = IdempotentProducer

    def __init__(self, url, app, *, commit_guard: bool = True, tracked_topics: Iterable[str] = (),
                 tansu: bool = False) -> None:
        super().__init__(url, app)
        self.commit_guard = commit_guard
        self.tracked_topics = frozenset(tracked_topics)
        if tansu:
            from streams.faust_ext.tansu import TansuConsumerThread

            self.consumer_thread_class = TansuConsumerThread
        else:
            self.consumer_thread_class = GuardedConsumerThread


def install_transport(app: faust.App, *, commit_guard: bool = True, tracked_topics: Iterable[str] = (),
                      tansu: bool = False) -> GuardedTransport:
    """Give ``app`` a :class:`GuardedTransport`; call before the app declares topics or agents.

    Refuses (RuntimeError) on a faust that lacks an internal the guard relies on.
    """
    require_internals()
    transport = GuardedTransport(app.conf.broker_consumer, app, commit_guard=commit_guard,
                                 tracked_topics=tracked_topics, tansu=tansu)
    app.transport = transport
    return transport
