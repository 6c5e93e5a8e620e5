"""The learner's handling of ds-stats records, on the shipped real-LLM votes (no broker needed)."""

from __future__ import annotations

import asyncio

import numpy as np

from llmens_core.aggregation import default_aggregator
from llmens_core.decisions import ColdStart, StatsAccumulator
from llmens_core.schema import AttributeSchema
from llmens_core.scoring import real_llm_votes
from streams.learner import _learn_cold_start, _record_stats
from streams.models import ModelRegistry


def _flushes(it, wk, lb, registry: ModelRegistry, attribute: str, size: int):
    """The ds-stats records that workers with a cold registry copy send, ``size`` products per flush."""
    by_item: dict = {}
    for i, w, lab in zip(it, wk, lb, strict=True):
        by_item.setdefault(i, {})[w] = lab
    acc = StatsAccumulator(flush_items=size)
    records = []
    for i, votes in by_item.items():
        if acc.add(attribute, i, votes):
            records.append({"attribute": attribute, **acc.take(attribute, registry.get(attribute)).to_record()})
    if acc.attributes():
        records.append({"attribute": attribute, **acc.take(attribute, registry.get(attribute)).to_record()})
    return records


def _decisions(model, it, wk, lb) -> dict:
    items, proba = model.predict_proba_batch(it, wk, lb)
    return {i: model.classes_[k] for i, k in zip(items.tolist(), proba.argmax(1).tolist(), strict=True)}


def test_the_learner_starts_a_cold_attribute_in_the_batch_race_s_basin():
    """Two small LLMs that answer "unisex" outvote the one right model on the shipped gender votes. Folding cold
    deltas one by one keeps the majority's basin; the learner's cold start learns the first deltas' votes as one
    batch, raced like the batch default, and decides as the batch default does."""
    (it, wk, lb), gold = real_llm_votes()["gender"]
    fitted = default_aggregator().fit(it, wk, lb)
    batch = dict(zip(fitted.items_.tolist(), fitted.predict().tolist(), strict=True))

    def accuracy(decided):
        return np.mean([decided[i] == g for i, g in gold.items()])

    naive = ModelRegistry(AttributeSchema.load())
    for record in _flushes(it, wk, lb, naive, "gender", size=16):
        naive.get("gender").apply(_stats_without_votes(record))
    registry = ModelRegistry(AttributeSchema.load())
    cold = ColdStart(min_items=10_000, max_seconds=3600.0)
    records = _flushes(it, wk, lb, registry, "gender", size=16)
    assert len(records) > 1 and all("votes" in r for r in records)
    assert all(_record_stats(registry, "gender", r, cold) is None for r in records)  # all held while cold
    assert registry.get("gender").is_cold
    votes, n_records = cold.take("gender")
    assert n_records == len(records)
    stats = asyncio.run(_learn_cold_start(registry, "gender", votes))
    registry.get("gender").apply(stats)
    started = _decisions(registry.get("gender"), it, wk, lb)
    print(f"gold accuracy: batch {accuracy(batch):.3f}, cold start {accuracy(started):.3f}, "
          f"cold deltas folded one by one {accuracy(_decisions(naive.get('gender'), it, wk, lb)):.3f}")
    assert accuracy(started) >= accuracy(batch) - 0.02 > 0.9
    assert accuracy(_decisions(naive.get("gender"), it, wk, lb)) < 0.7  # the majority's basin, as before


def _stats_without_votes(record):
    from llmens_core.aggregation import SufficientStats

    return SufficientStats.from_dict(record["stats"])


def test_a_warm_learner_rescores_a_cold_copy_s_votes_under_its_own_model():
    """A worker whose registry copy was still cold sends a majority-basin E-step; the warm learner learns those
    votes under its current model instead."""
    (it, wk, lb), _ = real_llm_votes()["gender"]
    registry = ModelRegistry(AttributeSchema.load())
    cold_copy = ModelRegistry(AttributeSchema.load())
    registry.get("gender").apply(asyncio.run(_learn_cold_start(registry, "gender", (list(it), list(wk), list(lb)))))
    record = {"attribute": "gender", **_flushes(it, wk, lb, cold_copy, "gender", size=10_000)[0]}
    stats = _record_stats(registry, "gender", record, ColdStart())
    assert stats is not None
    expected = registry.get("gender").batch_stats(*record["votes"])
    stale = _stats_without_votes(record)
    assert np.allclose(stats.confusion, expected.confusion)
    assert not np.allclose(stats.aligned(stale.workers, stale.classes).confusion, stale.confusion)
