"""`llmens backfill` killed with SIGKILL mid-run and run again: it polls the batches it had submitted and asks no
request twice (counted at the simulator), then decides every product."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import orjson
import yaml
from backfill_kit import endpoint, sim_config

from llmens_core.backfill import BackfillState


def _cli(products, state, settings) -> list[str]:
    return [sys.executable, "-m", "streams.cli", "backfill", str(products), "--state", str(state), "--dry-run",
            "--quick-fit", "--quiet", "--poll", "0.1", "--batch-size", "4", "--max-open", "2", "-c", str(settings)]


async def test_a_killed_backfill_resumes_without_asking_anything_twice(sim, products, tmp_path):
    cfg = sim_config()
    cfg["batch_seconds"] = 0.8
    base, store = await sim(cfg)
    eps = [endpoint("sim-large", "openai", base), endpoint("sim-careful", "anthropic", base)]
    settings = tmp_path / "llmens.yaml"
    settings.write_text(yaml.safe_dump({"llms": [e.model_dump(mode="json", exclude_unset=True) for e in eps]}))
    catalogue = tmp_path / "products.jsonl"
    catalogue.write_bytes(b"".join(p.to_bytes() + b"\n" for p in products))
    state_dir = tmp_path / "state"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}

    first = await asyncio.create_subprocess_exec(*_cli(catalogue, state_dir, settings), env=env,
                                                 stderr=asyncio.subprocess.PIPE)
    deadline = time.monotonic() + 15
    while True:  # kill it once a batch was collected and another is still open
        assert time.monotonic() < deadline and first.returncode is None, "the first run ended before it was killed"
        if (state_dir / "state.json").exists():
            st = BackfillState.load(state_dir)
            if st.answered() and st.open_batches():
                break
        await asyncio.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    await first.wait()
    killed = BackfillState.load(state_dir)
    open_at_kill, answered_at_kill = set(killed.open_batches()), killed.answered()
    assert open_at_kill and 0 < len(answered_at_kill) < 30

    second = await asyncio.create_subprocess_exec(*_cli(catalogue, state_dir, settings), env=env,
                                                  stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(second.communicate(), 30)
    assert second.returncode == 0, err.decode()
    done = BackfillState.load(state_dir)
    assert len(done.answered()) == 30 and not done.dead
    assert set(store.asked.values()) == {1} and len(store.asked) == 30  # nothing submitted twice
    assert open_at_kill <= set(done.batches)  # the open batches were polled to their end, not re-submitted
    decisions = [orjson.loads(x) for x in (state_dir / "decisions.jsonl").read_bytes().splitlines()]
    assert {d["product_id"] for d in decisions} == {p.product_id for p in products}
    assert "15 products, 30 requests (30 answered, 0 dead)" in err.decode()
