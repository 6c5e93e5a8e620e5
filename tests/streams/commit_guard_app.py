"""A minimal faust worker for the commit-guard test: copies ``src`` to ``out``; ``slow`` never finishes
while LLMENS_TEST_SLOW=1 (an event still in flight when later ones are done).

Run: ``python commit_guard_app.py BOOTSTRAP PREFIX`` (LLMENS_TEST_GUARD=0 runs plain faust, for comparison).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile

import faust

from streams.commit_guard import install_commit_guard
from streams.embedded import EMBEDDED_FAUST_SETTINGS

bootstrap, prefix = sys.argv[1], sys.argv[2]
if os.environ.get("LLMENS_TEST_GUARD", "1") == "1":
    install_commit_guard()
slow = os.environ.get("LLMENS_TEST_SLOW") == "1"
app = faust.App(f"{prefix}copier", broker=f"kafka://{bootstrap}", store="memory://", web_enabled=False,
                datadir=tempfile.mkdtemp(prefix="commit-guard-"), topic_partitions=1,
                **EMBEDDED_FAUST_SETTINGS)
src = app.topic(f"{prefix}src", value_serializer="raw", key_serializer="raw")
out = app.topic(f"{prefix}out", value_serializer="raw", key_serializer="raw")


@app.agent(src, concurrency=4)
async def copy(stream):
    async for value in stream:
        if value == b"slow" and slow:
            await asyncio.sleep(3600)
        await out.send(value=value)


if __name__ == "__main__":
    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
    app.main()
