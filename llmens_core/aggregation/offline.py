"""Offline fitting from recorded LabelVote JSONL (the core of ``llmens fit``)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

import orjson

from llmens_core.aggregation import default_aggregator
from llmens_core.aggregation.online import OnlineDawidSkene

__all__ = ["fit_votes", "read_votes"]


def read_votes(path: str | Path) -> dict[str, tuple[list[str], list[str], list[str | None]]]:
    """LabelVote JSONL -> ``{attribute: (items, workers, labels)}``; item = ``product_id``, worker = ``llm``.

    Only the latest ``version`` of each product is kept per attribute (older versions describe old content).
    A vote with ``label`` null (or an ``error``) is an abstention. Lines that are blank are skipped; a malformed
    line raises ``ValueError`` naming the line number.
    """
    latest: dict[tuple[str, str], int] = {}
    rows: dict[tuple[str, str], dict[str, str | None]] = defaultdict(dict)
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
                # one LabelVote per line, or the llm-votes topic's record: a list of a product's votes
                parsed = [(( v["attribute"], v["product_id"]), int(v["version"]), v["llm"], v.get("label"))
                          for v in (obj if isinstance(obj, list) else [obj])]
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{path}:{n}: not a LabelVote ({e})") from None
            for key, version, llm, label in parsed:
                old = latest.get(key)
                if old is None or version > old:
                    latest[key] = version
                    rows[key] = {}
                if version == latest[key]:
                    rows[key][llm] = label  # last vote of an llm for one product version wins
    out: dict[str, tuple[list, list, list]] = defaultdict(lambda: ([], [], []))
    for (attr, pid), votes in rows.items():
        it, wk, lb = out[attr]
        for llm, label in votes.items():
            it.append(pid)
            wk.append(llm)
            lb.append(label)
    return dict(out)


def fit_votes(
    votes_jsonl_path: str | Path,
    *,
    families: Mapping[str, str] | None = None,
    classes: Mapping[str, list[str]] | None = None,
    **kw,
) -> dict[str, OnlineDawidSkene]:
    """Fit the default aggregator per attribute on recorded votes and return warm-started online models.

    Args:
        votes_jsonl_path: LabelVote JSONL (fields product_id, version, attribute, llm, label).
        families: optional hint worker -> family (see :class:`~llmens_core.aggregation.AutoDawidSkene`).
        classes: optional closed label set per attribute (labels outside it are dropped); otherwise the labels seen.
        **kw: overrides for :func:`default_aggregator`.
    Returns ``{attribute: OnlineDawidSkene}``, each carrying the batch fit's sufficient statistics (version 1), so
    the stream starts from it; attributes where every vote abstains get a cold model on ``classes`` (if given).
    """
    out: dict[str, OnlineDawidSkene] = {}
    for attr, (it, wk, lb) in sorted(read_votes(votes_jsonl_path).items()):
        cls = list(classes[attr]) if classes and attr in classes else None
        if cls is not None:
            allowed = set(cls)
            lb = [x if x is None or x in allowed else None for x in lb]
        if all(x is None for x in lb):
            m = OnlineDawidSkene(cls, families=families)
            m.add_workers(wk)
            out[attr] = m
            continue
        batch = default_aggregator(families=families, classes=cls, **kw).fit(it, wk, lb)
        out[attr] = OnlineDawidSkene.from_batch(batch, families=families)
    return out
