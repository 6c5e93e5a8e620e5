"""`llmens backfill` killed with SIGKILL mid-run and run again from its state: it polls the batches it had submitted
and asks no request twice (counted at the simulator), then decides every product."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import aiohttp
import pytest
import yaml
from backfill_kit import endpoint, sim_config

from llmens_core.backfill import BackfillOptions, BackfillState, fit_and_decide, plan_requests, run_batches
from llmens_core.backfill.apis import BATCH_APIS
from llmens_core.backfill.decide import QUICK_FIT
from llmens_core.backfill.runner import batch_key


def _cli(products, state, settings) -> list[str]:
    return [sys.executable, "-m", "streams.cli", "backfill", str(products), "--state", str(state), "--dry-run",
            "--quick-fit", "--quiet", "--poll", "0.1", "--batch-size", "4", "--max-open", "2", "-c", str(settings)]


async def test_a_killed_backfill_resumes_without_asking_anything_twice(sim, schema, products, tmp_path):
    cfg = sim_config()
    cfg["batch_seconds"] = 1.0
    base, store = await sim(cfg)
    eps = [endpoint("sim-large", "openai", base), endpoint("sim-careful", "gemini", base)]
    settings = tmp_path / "llmens.yaml"
    settings.write_text(yaml.safe_dump({"llms": [e.model_dump(mode="json", exclude_unset=True) for e in eps]}))
    catalogue = tmp_path / "products.jsonl"
    catalogue.write_bytes(b"".join(p.to_bytes() + b"\n" for p in products))
    state_dir = tmp_path / "state"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}

    first = await asyncio.create_subprocess_exec(*_cli(catalogue, state_dir, settings), env=env,
                                                 stderr=asyncio.subprocess.PIPE)
    deadline = time.monotonic() + 60  # the subprocess's imports alone take seconds on a loaded machine
    while True:  # kill it once a batch was collected and another is still open
        assert time.monotonic() < deadline, "the first run did not get going"
        assert first.returncode is None, (await first.stderr.read()).decode()[-2000:]
        if (state_dir / "state.json").exists():
            st = BackfillState.load(state_dir)
            if st.answered() and st.open_batches():
                break
        await asyncio.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    await first.wait()
    killed = BackfillState.load(state_dir)
    open_at_kill, answered_at_kill = set(killed.open_batches()), killed.answered()
    assert open_at_kill and 0 < len(answered_at_kill) < 30, (open_at_kill, len(answered_at_kill))

    # the rerun, in-process (what `llmens backfill` runs after reading the same catalogue and settings)
    reqs, _ = plan_requests(products, eps, schema)
    end = await run_batches(eps, reqs, BackfillState.load(state_dir), BackfillOptions(batch_size=4, max_open=2,
                                                                                      poll_s=0.1))
    done = BackfillState.load(state_dir)
    assert (end.answered, end.dead) == (30, 0) and len(done.answered()) == 30 and not done.dead
    assert set(store.asked.values()) == {1} and len(store.asked) == 30  # nothing submitted twice
    assert open_at_kill <= set(done.batches)  # the open batches were polled to their end, not re-submitted
    _, decisions = fit_and_decide(done.vote_lines(), schema, tmp_path / "votes.jsonl", fit_options=QUICK_FIT)
    assert {d.product_id for d in decisions} == {p.product_id for p in products}


@pytest.mark.parametrize(("provider", "found"), [("openai", True), ("gemini", True), ("anthropic", False)])
async def test_a_batch_accepted_just_before_a_kill_is_found_again_by_its_key(provider, found, sim, schema, products,
                                                                             tmp_path):
    """The kill fell between the provider's accepting a batch and its id reaching the disk."""
    base, store = await sim(sim_config())
    eps = [endpoint("sim-large", provider, base)]
    reqs, _ = plan_requests(products[:4], eps, schema)
    state = BackfillState.load(tmp_path / "state")
    ids = [r.custom_id for r in reqs]
    state.submitting(batch_key(ids), "sim-large", ids)
    async with aiohttp.ClientSession() as session:  # what the killed run sent, its id never saved
        await BATCH_APIS[provider].submit(session, eps[0], reqs, batch_key(ids))
    end = await run_batches(eps, reqs, BackfillState.load(tmp_path / "state"), BackfillOptions(poll_s=0.05))
    assert (end.answered, end.dead) == (4, 0) and not BackfillState.load(tmp_path / "state").pending
    # found by its key: asked once; Anthropic's batches carry no key: asked again (the documented window)
    assert set(store.asked.values()) == ({1} if found else {2})
