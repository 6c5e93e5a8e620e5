"""The learner's maths without a broker: records learnt in order, votes merged, races run aside and adopted."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from llmens_core.aggregation import OnlineDawidSkene
from llmens_core.schema import AttributeSchema
from llmens_core.scoring import real_llm_votes
from streams.learner import (
    SETTLE_AFTER_S,
    RaceRunner,
    _adopt_finished_races,
    _settle_quiet_models,
    learn_records,
)
from streams.models import ModelRegistry


def _votes_record(items, workers, labels, attribute: str = "gender") -> dict:
    return {"attribute": attribute, "votes": {"items": list(items), "workers": list(workers), "labels": list(labels)}}


def _flushes(size: int, seed: int = 0) -> list[dict]:
    """The shipped real-LLM gender votes as a stream of ``size``-item vote records, in a shuffled order."""
    (it, wk, lb), _ = real_llm_votes()["gender"]
    it, wk, lb = (np.asarray(x, dtype=object) for x in (it, wk, lb))
    uniq = np.unique(it)[np.random.default_rng(seed).permutation(len(np.unique(it)))]
    records = []
    for start in range(0, len(uniq), size):
        sel = np.isin(it, uniq[start:start + size])
        records.append(_votes_record(it[sel], wk[sel], lb[sel]))
    return records


def test_records_are_learnt_in_order_votes_merged_and_a_bad_one_skipped():
    """Consecutive vote records are one mini-batch (a learner that fell behind takes fewer, larger steps); a gold
    record is learnt in its place; a statistics record (what workers sent before votes) is still folded; a record
    that cannot be learnt is counted and skipped, and the others are learnt."""
    first, second, third = _flushes(16)[:3]
    model, counters = OnlineDawidSkene(), {}
    stats = OnlineDawidSkene().batch_stats(*third["votes"].values())
    gold = {"attribute": "gender", "gold": [{"votes": {"minilm": "men", "qwen-0.5b": "unisex"}, "label": "men"}]}
    broken = {"attribute": "gender", "votes": {"items": ["a", "b"], "workers": ["minilm"], "labels": ["men"]}}
    data = learn_records(model, [first, broken, second, gold, {"attribute": "gender", "stats": stats.to_dict()}],
                         counters)
    assert model.version == 3  # the two vote records as one step, the gold record, the statistics
    assert counters == {"stats_applied": 3, "gold_records_applied": 1, "gold_items_applied": 1, "records_skipped": 1}
    assert model.n_items_ == 32 + 1 + stats.n_items
    assert OnlineDawidSkene.from_bytes(data).version == model.version


async def _run_races(own, races, registry, published=None) -> list:
    adopted = await _adopt_finished_races(own, races, registry, None)
    while races.running:
        await asyncio.sleep(0.05)
        adopted += await _adopt_finished_races(own, races, registry, None)
    if published is not None:
        published.extend(OnlineDawidSkene.from_bytes(data) for _, data in adopted)
    return adopted


async def test_the_learner_races_a_young_model_aside_and_ends_in_the_batch_basin():
    """16-item flushes of the shipped real-LLM gender votes, learnt as the learner does: each record a plain step at
    once, the young model's race in the race process, adopted when done. The published models end where the batch
    race's are (92.5 %; 49 % learnt as plain steps alone), and every adoption is a newer version. A race whose
    attribute another learner has published a newer version of since is dropped."""
    (it, wk, lb), gold = real_llm_votes()["gender"]
    model, races, published = OnlineDawidSkene(), RaceRunner(), []
    own, registry = {"gender": model}, ModelRegistry(AttributeSchema({}))
    registry.offer("gender", OnlineDawidSkene())  # version 0: no other learner has published
    try:
        for record in _flushes(16):
            published.append(OnlineDawidSkene.from_bytes(learn_records(model, [record])))
            races.start("gender", model)
            published.extend(OnlineDawidSkene.from_bytes(data)
                              for _, data in await _adopt_finished_races(own, races, registry, None))
        await _run_races(own, races, registry, published)
        versions = [m.version for m in published]
        assert versions == sorted(set(versions)) and len(published) > len(_flushes(16))
        last = published[-1]
        items, proba = last.predict_proba_batch(it, wk, lb)
        decided = dict(zip(items.tolist(), (last.classes_[k] for k in proba.argmax(1)), strict=True))
        assert np.mean([decided[i] == g for i, g in gold.items()]) > 0.9

        young = own["gender"] = OnlineDawidSkene()
        learn_records(young, _flushes(16)[:1])  # a cold model's first dense batch: a race is due
        registry.offer("gender", last)  # another learner's newer version
        races.start("gender", young)
        assert races.running
        assert await _run_races(own, races, registry) == [] and young.version == 1
    finally:
        races.close()


async def test_a_quiet_attribute_s_young_model_races_once_more_on_all_its_items():
    """A young model raced on its first 48 items and stepped on 5 more is not due a growth race (53 < 1.5 x 48). Once
    its attribute has had no record for ``SETTLE_AFTER_S``, the learner starts its settling race, once; an attribute
    with a recent record waits."""
    flushes = _flushes(16)
    joined = {k: sum((f["votes"][k] for f in flushes[:3]), []) for k in ("items", "workers", "labels")}
    model = OnlineDawidSkene(candidates=("pooled", "full+class-prior"))
    model.partial_fit(joined["items"], joined["workers"], joined["labels"])  # a cold model races its first batch
    learn_records(model, flushes[3:])
    assert model.young_race() is None
    races, own = RaceRunner(), {"gender": model}
    try:
        recent = {"gender": time.monotonic()}
        _settle_quiet_models(own, races, recent)
        assert not races.running and recent
        quiet = {"gender": time.monotonic() - SETTLE_AFTER_S}
        _settle_quiet_models(own, races, quiet)
        assert list(races.running) == ["gender"] and not quiet
        registry = ModelRegistry(AttributeSchema({}))
        registry.offer("gender", OnlineDawidSkene())  # version 0: no other learner has published
        adopted = await _run_races(own, races, registry)
        assert [a for a, _ in adopted] == ["gender"] and model.young_race(settling=True) is None
    finally:
        races.close()


_DIES_WITH_PARENT = """
import asyncio, os, sys, time
from llmens_core.aggregation import OnlineDawidSkene
from streams.learner import RaceRunner, learn_records
from tests.streams.test_learner import _flushes

async def main():
    runner, model = RaceRunner(), OnlineDawidSkene()
    learn_records(model, _flushes(16)[:1])
    runner.start("gender", model)
    while not os.popen(f"pgrep -P {os.getpid()}").read().split():
        await asyncio.sleep(0.01)
    print(" ".join(os.popen(f"pgrep -P {os.getpid()}").read().split()), flush=True)
    os._exit(0)  # the worker dies without closing the runner

if __name__ == "__main__":
    asyncio.run(main())
"""


def test_the_race_process_dies_with_its_worker(tmp_path):
    """A worker killed mid-race must not leave its race process behind (it would hold CPU, or wait forever), even
    killed as the race process is still starting, before it could ask to die with its parent."""
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    script = tmp_path / "worker.py"
    script.write_text(_DIES_WITH_PARENT)
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=root,
                         env={**os.environ, "PYTHONPATH": str(root)}, check=True).stdout.split()
    assert out, "the race process never started"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in out):
        time.sleep(0.1)
    assert not any(Path(f"/proc/{pid}").exists() for pid in out)


def test_a_learner_forgets_the_models_of_partitions_a_rebalance_took_so_only_their_owner_publishes():
    """A copy whose ds-stats partition is no longer assigned is dropped with its settling clock; its finished race
    then finds no copy and publishes nothing. Copies of held partitions, and of attributes never seen on a
    partition, are kept."""
    from streams.learner import _forget_revoked

    own = {"gender": OnlineDawidSkene(), "material": OnlineDawidSkene(), "colour": OnlineDawidSkene()}
    last_record = {"gender": 1.0, "material": 2.0}
    partition_of = {"gender": ("stats", 0), "material": ("stats", 1)}
    assert _forget_revoked(own, last_record, partition_of, {("stats", 1)}) == ["gender"]
    assert set(own) == {"material", "colour"} and last_record == {"material": 2.0}
    assert _forget_revoked(own, last_record, partition_of, {("stats", 1)}) == []
