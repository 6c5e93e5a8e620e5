"""A commit that fails on a broker connection gone with its node is a failed commit, not a dead worker."""

from __future__ import annotations

import asyncio

import faust
import pytest
from aiokafka.errors import KafkaConnectionError
from faust.types import TP

from streams.faust_ext.consumer_thread import GuardedConsumerThread, connection_lost
from streams.faust_ext.transport import install_transport


class _Aiokafka:
    def __init__(self, error: BaseException | None) -> None:
        self.error, self.committed = error, []

    async def commit(self, offsets):
        if self.error is not None:
            raise self.error
        self.committed.append(offsets)


def _thread(error: BaseException | None) -> tuple[GuardedConsumerThread, _Aiokafka, list]:
    app = faust.App("consumer-thread-unit", broker="kafka://127.0.0.1:1", store="memory://", web_enabled=False)
    install_transport(app)
    thread = app.consumer._new_consumer_thread()
    assert isinstance(thread, GuardedConsumerThread)
    aiokafka, crashes = _Aiokafka(error), []
    thread._ensure_consumer = lambda: aiokafka
    thread.assignment = lambda: {TP("src", 0)}

    async def crash(exc):
        crashes.append(exc)

    thread.crash = crash
    return thread, aiokafka, crashes


@pytest.mark.parametrize("error", [
    RuntimeError("unable to perform operation on <TCPTransport closed=True reading=False>; the handler is closed"),
    KafkaConnectionError("Connection at 127.0.0.1:51375 closed")])
def test_a_commit_on_a_lost_connection_fails_without_crashing_the_worker(error):
    """The failover drill's dead worker: uvloop's RuntimeError from a commit to the killed coordinator's node."""
    thread, _, crashes = _thread(error)
    assert connection_lost(error)
    assert asyncio.run(thread._commit({TP("src", 0): 10})) is False and crashes == []


def test_other_commit_errors_still_crash_and_a_good_commit_goes_through():
    thread, aiokafka, crashes = _thread(None)
    assert asyncio.run(thread._commit({TP("src", 0): 10, TP("other", 0): 5})) is True
    assert [{tp.partition: o.offset for tp, o in c.items()} for c in aiokafka.committed] == [{0: 10}]
    thread, _, crashes = _thread(ValueError("a bug"))
    assert asyncio.run(thread._commit({TP("src", 0): 10})) is False and len(crashes) == 1
    assert not connection_lost(RuntimeError("something else"))
