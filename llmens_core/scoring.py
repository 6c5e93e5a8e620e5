"""Score decisions against gold: the ensemble, plain majority vote of the same votes, and every single LLM.

Gold follows the development data's convention: a key in ``attributes`` with ``null`` means the
attribute is not stated (label ``"none"``); a missing key means unknown and is not scored.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

import orjson

from llmens_core.aggregation import MajorityVote
from llmens_core.events import NOT_PRESENT

__all__ = ["demo_gold", "gold_labels", "latest_decisions", "majority", "real_llm_votes", "recorded_attributes",
           "score_decisions"]


def gold_labels(products: Iterable[Mapping]) -> dict[tuple[str, str], str]:
    """``{(product_id, attribute): label}`` from product records carrying gold ``attributes`` dicts."""
    out = {}
    for p in products:
        attrs = p.get("gold", p.get("attributes"))
        if isinstance(attrs, Mapping):
            for a, v in attrs.items():
                out[(str(p["product_id"]), a)] = NOT_PRESENT if v is None else v
    return out


def demo_gold() -> dict[tuple[str, str], str]:
    """:func:`gold_labels` of the shipped demo products (OA-Mine, Apache-2.0)."""
    from importlib import resources

    raw = resources.files("llmens_core.data").joinpath("demo_products.jsonl").read_bytes()
    return gold_labels(orjson.loads(line) for line in raw.splitlines())


def real_llm_votes() -> dict[str, tuple[tuple[list, list, list], dict[str, str]]]:
    """The shipped votes of the real local LLMs on the demo products (issue 13's recording), per attribute:
    ``{attribute: ((items, workers, labels), {item: gold})}``, only votes with a label on items with gold."""
    from importlib import resources

    gold = demo_gold()
    raw = resources.files("llmens_core.data").joinpath("real_llm_votes_oamine.jsonl").read_bytes()
    cols: dict[str, tuple[list, list, list]] = {}
    for line in raw.splitlines():
        for v in orjson.loads(line):
            if v.get("label") is not None and (v["product_id"], v["attribute"]) in gold:
                c = cols.setdefault(v["attribute"], ([], [], []))
                c[0].append(v["product_id"])
                c[1].append(v["llm"])
                c[2].append(v["label"])
    return {a: (c, {i: gold[(i, a)] for i in c[0]}) for a, c in sorted(cols.items())}


def recorded_attributes(predictions: Path) -> dict[str, set[str]]:
    """``{product_id: attributes}`` that a predictions JSONL (one recorded LLM output per line) covers."""
    asked: dict[str, set[str]] = {}
    for line in Path(predictions).read_bytes().splitlines():
        if line.strip():
            r = orjson.loads(line)
            asked.setdefault(r["product_id"], set()).add(r["attribute"])
    return asked


def majority(votes: Mapping[str, str | None]) -> str | None:
    """:class:`~llmens_core.aggregation.MajorityVote` on one item's votes (LLM -> label, ``None`` abstains): the label
    given most often, a tie to the first of the tied labels in sorted order (MajorityVote's one tie rule); ``None``
    when every vote abstains."""
    pairs = [(llm, label) for llm, label in votes.items() if label is not None]
    if not pairs:
        return None
    fitted = MajorityVote().fit(["item"] * len(pairs), [llm for llm, _ in pairs], [label for _, label in pairs])
    return fitted.predict()[0]


def latest_decisions(decisions: Iterable[Mapping]) -> dict[tuple[str, int, str], Mapping]:
    """The latest revision of each (product, version, attribute) decision (a later record wins a tie)."""
    latest: dict[tuple, Mapping] = {}
    for d in decisions:
        key = (d["product_id"], d["version"], d["attribute"])
        if key not in latest or d.get("revision", 0) >= latest[key].get("revision", 0):
            latest[key] = d
    return latest


def score_decisions(decisions: Iterable[Mapping], gold: Mapping[tuple[str, str], str]) -> dict[str, dict]:
    """Per attribute: accuracy of ``ensemble``, ``majority_vote`` and each LLM on items with gold, and ``n``.

    An LLM that abstained on an item counts as wrong for that item (it gave no usable answer).
    Only the latest revision of each (product, version, attribute) is scored.
    """
    latest = latest_decisions(decisions)
    right: dict[str, Counter] = defaultdict(Counter)
    total: Counter = Counter()
    llms: dict[str, set] = defaultdict(set)
    for (pid, _v, attr), d in latest.items():
        g = gold.get((pid, attr))
        if g is None:
            continue
        total[attr] += 1
        votes = d.get("votes") or {}
        right[attr]["ensemble"] += d.get("value") == g
        right[attr]["majority_vote"] += majority(votes) == g
        for llm, lab in votes.items():
            llms[attr].add(llm)
            right[attr][llm] += lab == g
    out = {}
    for attr in sorted(total):
        n = total[attr]
        row = {"n": n, "ensemble": right[attr]["ensemble"] / n, "majority_vote": right[attr]["majority_vote"] / n}
        for llm in sorted(llms[attr]):
            row[llm] = right[attr][llm] / n
        out[attr] = row
    return out
