"""A minimal faust worker for the commit-guard test: copies ``src`` to ``out``; ``slow`` never finishes
while LLMENS_TEST_SLOW=1 (an event still in flight when later ones are done).

Run: ``python commit_guard_app.py BOOTSTRAP PREFIX`` (LLMENS_TEST_GUARD=0 runs faust's own commit rule, for
comparison; LLMENS_TEST_TANSU=1 adds the Tansu workarounds). LLMENS_TEST_DROP_HEAD=1 makes the consumer lose the
first record it fetches (offset 1) once, before it reaches the agent, as faust was seen to around a rebalance,
and runs the watchdog's heal every second.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile

import faust

from streams.faust_ext.commit_guard import GuardedConsumer
from streams.faust_ext.tansu import LOCAL_BROKER_FAUST_SETTINGS, TANSU_FAUST_SETTINGS
from streams.faust_ext.transport import install_transport

bootstrap, prefix = sys.argv[1], sys.argv[2]
tansu = os.environ.get("LLMENS_TEST_TANSU") == "1"
slow = os.environ.get("LLMENS_TEST_SLOW") == "1"
# faust's worker serves its web views even with web_enabled=False: on a free port, not 6066 (two runs at once)
app = faust.App(f"{prefix}copier", broker=f"kafka://{bootstrap}", store="memory://", web_enabled=False,
                web_bind="127.0.0.1", web_port=int(os.environ.get("LLMENS_TEST_WEB_PORT", "0")),
                datadir=tempfile.mkdtemp(prefix="commit-guard-"), topic_partitions=1,
                **LOCAL_BROKER_FAUST_SETTINGS, **(TANSU_FAUST_SETTINGS if tansu else {}))
transport = install_transport(app, commit_guard=os.environ.get("LLMENS_TEST_GUARD", "1") == "1", tansu=tansu)
drop_head = os.environ.get("LLMENS_TEST_DROP_HEAD") == "1"


class HeadDroppingConsumer(GuardedConsumer):
    """Fetches offset 1 of ``src`` once without handing it to the stream (never acked, never in flight).

    Offset 1, not 0: faust reads a committed offset of 0 as None (no commit), and then nothing can be held.
    """

    dropped = False

    async def getmany(self, timeout):
        async for tp, message in super().getmany(timeout):
            if not HeadDroppingConsumer.dropped and tp.topic == f"{prefix}src" and message.offset == 1:
                HeadDroppingConsumer.dropped = True
                print("dropped offset 1 before the agent", flush=True)
                continue
            yield tp, message


if drop_head:
    transport.Consumer = HeadDroppingConsumer
src = app.topic(f"{prefix}src", value_serializer="raw", key_serializer="raw")
out = app.topic(f"{prefix}out", value_serializer="raw", key_serializer="raw")


@app.agent(src, concurrency=4)
async def copy(stream):
    async for value in stream:
        if value == b"slow" and slow:
            await asyncio.sleep(3600)
        await out.send(value=value)


if drop_head:
    @app.timer(interval=1.0)
    async def heal():
        for tp, offset, action in await app.consumer.heal_held_heads(hold_s=1.0):
            print(f"heal {tp.topic}:{tp.partition} at {offset}: {action}", flush=True)


if __name__ == "__main__":
    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
    app.main()
