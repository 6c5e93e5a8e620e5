"""Run a backfill's requests through the batch APIs to the end: submit, poll, collect, ask failed lines again.

Each loop submits what is neither answered, nor in an open batch, nor dead (at most ``batch_size`` lines per
batch, at most ``max_open`` batches open at a time), then polls the open batches and collects those that
ended. Every change is saved in the :class:`BackfillState` as it happens, so the process may be killed at any
point: a rerun with the same state directory polls the batches it had submitted and asks only what no collected
batch answered. A line that failed (errored, missing, unreadable, malformed) is asked again in a later batch,
up to ``max_tries`` times; then it is dead (kept in the state with its reason, for the dead-letter topic).

A batch is labelled with a key (a hash of its custom ids) saved before it is submitted: a run killed between the
provider's accepting a batch and its id reaching the disk finds it again by that key on the rerun (OpenAI:
``metadata.llmens_key``; Gemini: ``displayName``). Anthropic's Message Batches carry no label, so there such a
batch is submitted again (a window of one HTTP response).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp

from llmens_core.backfill.apis import BATCH_APIS, BatchApiError, LineResult
from llmens_core.backfill.requests import BatchRequest
from llmens_core.backfill.results import read_line
from llmens_core.backfill.state import BackfillState
from llmens_core.llm.config import EndpointConfig

__all__ = ["BackfillOptions", "BackfillProgress", "run_batches"]

log = logging.getLogger("llmens.backfill")


def batch_key(ids: Sequence[str]) -> str:
    """A batch's label at the provider: 24 hex characters of SHA-256 of its custom ids."""
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:24]


@dataclass(frozen=True)
class BackfillOptions:
    batch_size: int = 1000
    """Lines per batch (OpenAI takes up to 50,000, Anthropic 100,000)."""
    max_open: int = 16
    """Batches open at a time."""
    poll_s: float = 5.0
    max_tries: int = 3
    """Failed lines of one request before it is dead-lettered."""
    api_retries: int = 5
    """Consecutive failed calls to a batch API (submit, poll, results) before the run stops (state kept)."""


@dataclass(frozen=True)
class BackfillProgress:
    total: int
    answered: int
    dead: int
    open_batches: int
    in_flight: int


async def _call(opts: BackfillOptions, what: str, fn, *args):
    """``fn(*args)`` with up to ``api_retries`` retries on retryable batch-API errors."""
    for attempt in range(opts.api_retries + 1):
        try:
            return await fn(*args)
        except BatchApiError as e:
            if not e.retryable or attempt == opts.api_retries:
                raise
            log.warning("backfill: %s failed (%s); retrying", what, e)
            await asyncio.sleep(min(30.0, 0.2 * 2 ** attempt))
    raise AssertionError("unreachable")


class _Run:
    def __init__(self, endpoints: Sequence[EndpointConfig], requests: Sequence[BatchRequest], state: BackfillState,
                 opts: BackfillOptions, session: aiohttp.ClientSession):
        self.eps = {e.name: e for e in endpoints}
        self.by_id = {r.custom_id: r for r in requests}
        self.state, self.opts, self.session = state, opts, session

    def pending(self) -> dict[str, list[BatchRequest]]:
        st = self.state
        skip = st.answered() | st.in_flight() | set(st.dead)
        out: dict[str, list[BatchRequest]] = defaultdict(list)
        for cid, r in self.by_id.items():
            if cid not in skip:
                out[r.llm].append(r)
        return out

    async def submit(self) -> None:
        room = self.opts.max_open - len(self.state.open_batches())
        for llm, reqs in self.pending().items():
            ep = self.eps[llm]
            for i in range(0, len(reqs), self.opts.batch_size):
                if room <= 0:
                    return
                chunk = reqs[i:i + self.opts.batch_size]
                ids = [r.custom_id for r in chunk]
                key = batch_key(ids)
                self.state.submitting(key, llm, ids)
                bid = await _call(self.opts, f"submit to {llm}", BATCH_APIS[ep.provider].submit, self.session, ep,
                                  chunk, key)
                self.state.submitted(bid, llm, ids, key)
                room -= 1

    async def recover(self) -> None:
        """Batches a killed run was submitting: adopt the one the provider has under their key, else ask again."""
        for key, p in list(self.state.pending.items()):
            ep = self.eps.get(p["llm"])
            found = None if ep is None else await _call(self.opts, "find a batch", BATCH_APIS[ep.provider].find,
                                                        self.session, ep, key)
            if found is not None and found not in self.state.batches:
                self.state.submitted(found, p["llm"], p["ids"], key)
            else:
                self.state.not_submitted(key)

    async def poll(self) -> None:
        for bid, b in list(self.state.open_batches().items()):
            ep = self.eps.get(b["llm"])
            if ep is None:
                raise ValueError(f"batch {bid} was submitted to LLM {b['llm']!r}, which the config no longer has")
            api = BATCH_APIS[ep.provider]
            try:
                status = await _call(self.opts, f"poll {bid}", api.poll, self.session, ep, bid)
            except BatchApiError as e:
                if e.retryable:
                    raise
                # the provider refuses to show this batch (gone, or not ours): its lines are asked again
                self.collect(bid, ep, b["ids"], {}, f"could not be polled ({e})"[:200])
                continue
            if not status.ended:
                continue
            lines: list[LineResult] = []
            if status.failed is None:
                lines = await _call(self.opts, f"results of {bid}", api.results, self.session, ep, bid)
            self.collect(bid, ep, b["ids"], {x.custom_id: x for x in lines}, status.failed)

    def collect(self, bid: str, ep: EndpointConfig, ids: list[str], lines: dict[str, LineResult],
                batch_failed: str | None) -> None:
        ok, votes, failed = [], [], {}
        usage = {"requests": 0.0, "tokens_in": 0.0, "tokens_out": 0.0, "cost_usd": 0.0}
        for cid in ids:
            req = self.by_id.get(cid)
            if req is None:  # the catalogue no longer has this product version: nothing to ask again
                continue
            if batch_failed is not None:
                failed[cid] = f"batch {batch_failed}"
                continue
            out = read_line(ep, req, lines.get(cid))
            usage["requests"] += 1 if lines.get(cid) is not None and lines[cid].error is None else 0
            usage["tokens_in"] += out.tokens_in
            usage["tokens_out"] += out.tokens_out
            usage["cost_usd"] += out.cost_usd
            if out.votes is None:
                failed[cid] = out.failure or "failed"
            else:
                ok.append(cid)
                votes += [v.to_bytes() for v in out.votes]
        dead = self.state.collected(bid, ok, votes, usage, failed, self.opts.max_tries)
        for cid in dead:
            log.warning("backfill: %s of %s dead-lettered: %s", ep.name, self.by_id[cid].product.product_id,
                        self.state.dead[cid])

    def progress(self) -> BackfillProgress:
        st = self.state
        ids = self.by_id.keys()
        return BackfillProgress(len(ids), len(st.answered() & ids), len(set(st.dead) & ids),
                                len(st.open_batches()), len(st.in_flight() & ids))


async def run_batches(endpoints: Sequence[EndpointConfig], requests: Sequence[BatchRequest], state: BackfillState,
                      opts: BackfillOptions = BackfillOptions(),
                      on_progress: Callable[[BackfillProgress], None] | None = None) -> BackfillProgress:
    """Ask every request through its endpoint's batch API until each is answered or dead; returns the end state."""
    known = {e.name for e in endpoints}
    missing = sorted({r.llm for r in requests} - known)
    if missing:
        raise ValueError(f"requests for unknown LLMs {missing}")
    async with aiohttp.ClientSession() as session:
        run = _Run(endpoints, requests, state, opts, session)
        await run.recover()
        while True:
            await run.submit()
            if on_progress is not None:
                on_progress(run.progress())
            if not state.open_batches():
                if not run.pending():
                    return run.progress()
                continue
            await asyncio.sleep(opts.poll_s)
            await run.poll()
