"""faust's aiokafka consumer thread, minus one way a broker's death stopped a whole worker.

When the group coordinator's node is SIGKILLed mid-commit, aiokafka writes the OffsetCommit to a connection
uvloop has already closed, and uvloop raises ``RuntimeError('unable to perform operation on <TCPTransport
closed=True ...>; the handler is closed')`` instead of a Kafka error. faust's ``_commit`` crashes the
consumer (and the worker) on any exception but a rebalance's ``CommitFailedError`` (seen in the failover
drill: one worker of three died). A commit that fails on the connection is a failed commit, not a crash: the
offsets are committed again later, and the commit guard re-reads anything whose commit went missing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from time import monotonic

from aiokafka.errors import CommitFailedError, KafkaConnectionError, NodeNotReadyError, RequestTimedOutError
from aiokafka.structs import OffsetAndMetadata
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, ensure_aiokafka_TP

log = logging.getLogger(__name__)

__all__ = ["GuardedConsumerThread", "connection_lost"]


def connection_lost(exc: BaseException) -> bool:
    """True for an error of a connection to a broker that went away (retry later), not of the commit itself."""
    if isinstance(exc, (KafkaConnectionError, NodeNotReadyError, RequestTimedOutError)):
        return True
    return isinstance(exc, RuntimeError) and "handler is closed" in str(exc)


class GuardedConsumerThread(AIOKafkaConsumerThread):
    """faust's consumer thread whose commit reports a lost broker connection as a failed commit."""

    async def _commit(self, offsets: Mapping) -> bool:
        """faust 0.15.3's ``_commit``, plus: an error of a lost connection returns False (commit later)."""
        consumer = self._ensure_consumer()
        commitable = {tp: offset for tp, offset in offsets.items() if tp in self.assignment()}
        try:
            self.tp_last_committed_at.update({tp: monotonic() for tp in commitable})
            await consumer.commit({ensure_aiokafka_TP(tp): OffsetAndMetadata(offset, "")
                                   for tp, offset in commitable.items()})
        except CommitFailedError as exc:
            if "already rebalanced" in str(exc):
                return False
            self.log.exception("Committing raised exception: %r", exc)
            await self.crash(exc)
            return False
        except Exception as exc:
            if connection_lost(exc):
                log.warning("offset commit failed on a lost broker connection (%s: %s); committing again later",
                            type(exc).__name__, exc)
                return False
            self.log.exception("Got exception: %r\nCurrent assignment: %r", exc, self.assignment())
            await self.crash(exc)
            return False
        return True
