"""A backfill's votes -> one batch-fitted model per attribute, and every product's decisions under it.

The models are fitted as ``llmens fit`` fits them (:func:`fit_votes` on the votes written as LabelVote JSONL),
on every vote at once; each product's decision is then :func:`decide` under its attribute's model, as the
stream decides. Model versions are given by the caller (above those on ``ds-model``, as ``fit`` sets them), so
a decision names the model that made it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from llmens_core.aggregation import OnlineDawidSkene
from llmens_core.aggregation.offline import fit_votes
from llmens_core.decisions import decide
from llmens_core.events import AttributeDecision
from llmens_core.schema import AttributeSchema

__all__ = ["QUICK_FIT", "fit_and_decide"]

QUICK_FIT: dict[str, Any] = {"repeats": 1, "difficulty": False, "dependence": False}
"""One cross-validation split, no difficulty or dependence candidates: about 20x less CPU than the full search."""


def fit_and_decide(vote_lines: list[bytes], schema: AttributeSchema, votes_path: Path, *,
                   families: Mapping[str, str] | None = None, versions: Mapping[str, int] | None = None,
                   fit_options: Mapping[str, Any] | None = None,
                   ) -> tuple[dict[str, OnlineDawidSkene], list[AttributeDecision]]:
    """Fit each attribute's model on ``vote_lines`` (written to ``votes_path`` first) and decide every product.

    ``versions``: the version each attribute's model gets (default 1); ``fit_options``: overrides for the default
    aggregator (:data:`QUICK_FIT` trades some of its model search for speed).
    """
    votes_path.write_bytes(b"".join(v + b"\n" for v in vote_lines))
    if not vote_lines:
        return {}, []
    classes = {a: list(schema[a].classes) for a in schema}
    models = fit_votes(votes_path, classes=classes, families=families, **dict(fit_options or {}))
    for attr, m in models.items():
        m.version = (versions or {}).get(attr, 1)
    by_item: dict[tuple[str, int, str], dict[str, str | None]] = defaultdict(dict)
    for line in vote_lines:
        v = orjson.loads(line)
        by_item[(v["product_id"], v["version"], v["attribute"])][v["llm"]] = v.get("label")
    latest: dict[str, int] = {}
    for pid, ver, _ in by_item:
        latest[pid] = max(ver, latest.get(pid, ver))
    decisions = []
    for (pid, ver, attr), votes in sorted(by_item.items()):
        if ver != latest[pid] or attr not in models:
            continue
        d, _ = decide(pid, ver, attr, votes, models[attr], asked=sorted(votes))
        decisions.append(d)
    return models, decisions
