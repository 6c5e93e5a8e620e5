"""The online model's record: bytes in, bytes out (the ``ds-model`` topic's values), within a size bound.

A record holds the statistics and the model's configuration exactly (orjson; worker, class and family names must be
str or int); derived parameters are not stored, they are derived again on reading. A young model's record also
carries its votes (zlib, base64) and the gold it keeps, up to :data:`YOUNG_RECORD_BYTES` together: a learner that
takes the model over (a restart, a rebalance) goes on racing it as it grows. Without them, a model handed over at 32
items of the shipped real-LLM gender votes learnt on by plain steps and ended at 25-51 % (92.5 % without the
handover). The revisit window and the copy test's counts are working memory, not state: they are not written.
"""

from __future__ import annotations

import base64
import zlib
from typing import TYPE_CHECKING

import numpy as np
import orjson

from llmens_core.aggregation.model import N_CANDIDATES
from llmens_core.aggregation.youth import Youth

if TYPE_CHECKING:
    from llmens_core.aggregation.online import OnlineDawidSkene

__all__ = ["FORMAT", "YOUNG_RECORD_BYTES", "model_from_bytes", "model_to_bytes"]

FORMAT = 3
YOUNG_RECORD_BYTES = 384 * 1024
"""Most bytes of a young model's votes and gold carried by a record, so that it stays well under Kafka's default 1 MB
message limit; a young model with more is written as a grown one (4,096 items of 10 LLMs with 12 labels take 46 KB)."""


def _packed_votes(youth: Youth) -> str | None:
    """The young model's votes: each batch's codes, zlib-packed (None when they would take more than
    :data:`YOUNG_RECORD_BYTES`)."""
    head = np.array([len(youth.batches), youth.raced_items] + [b[3] for b in youth.batches]
                    + [len(b[0]) for b in youth.batches], dtype="<i8")
    body = [np.ascontiguousarray(c, dtype="<i4") for b in youth.batches for c in b[:3]]
    packed = base64.b64encode(zlib.compress(b"".join(a.tobytes() for a in (head, *body)), 6)).decode()
    return packed if len(packed) <= YOUNG_RECORD_BYTES else None


def _young_fields(youth: Youth | None) -> dict:
    """The young model's part of a record: its votes and the gold it keeps, when together they take at most
    :data:`YOUNG_RECORD_BYTES` (else none: the model is written as a grown one)."""
    young = None if youth is None else _packed_votes(youth)
    if young is None:
        return {"young": None}
    gold = [{"at": at, "items": [{"gold": g, "votes": [[w, v] for w, v in votes.items()]} for votes, g in items]}
            for at, items in youth.gold]
    if len(young) + len(orjson.dumps(gold)) > YOUNG_RECORD_BYTES:
        return {"young": None}
    return {"young": young, "young_gold": gold}


def _read_youth(packed: str, gold: list) -> Youth:
    """A young model's votes and gold from :func:`_young_fields`. The copy test's counts are theirs (a young model has
    counted every item it learnt, and holds them all), counted when first needed (``uncounted``): the workers' copies
    of a model never learn, and would count each version for nothing."""
    raw = zlib.decompress(base64.b64decode(packed))
    n_batches = int(np.frombuffer(raw, dtype="<i8", count=1)[0])
    head = np.frombuffer(raw, dtype="<i8", count=2 + 2 * n_batches)
    raced, items, votes = int(head[1]), head[2:2 + n_batches], head[2 + n_batches:]
    codes = np.frombuffer(raw, dtype="<i4", offset=head.nbytes).astype(np.int64)
    ends = np.cumsum(np.repeat(votes, 3))
    parts = np.split(codes, ends[:-1])
    batches = [(parts[3 * b], parts[3 * b + 1], parts[3 * b + 2], int(items[b])) for b in range(n_batches)]
    kept = [(g["at"], [(dict(map(tuple, x["votes"])), x["gold"]) for x in g["items"]]) for g in gold]
    return Youth(batches, raced, kept, uncounted=True)


def model_to_bytes(m: OnlineDawidSkene) -> bytes:
    """``m``'s record (see the module docstring)."""
    return orjson.dumps({
        "format": FORMAT, "config": m._config(), "families": list(m.families.items()),
        "version": m.version, "t": m.t, "q": m.q, "n_items": m.n_items_,
        "workers": m.workers_, "classes": m.classes_, "S": m.S.ravel().tolist(),
        "S_class": m.S_class.tolist(), "S_hard": m.S_hard.ravel().tolist(),
        "S_hard_class": m.S_hard_class.tolist(), "score": m.score.tolist(),
        "score_m2": m.score_m2.ravel().tolist(), "score_votes": m.score_votes,
        "pairs": m.pairs.ravel().tolist(), **_young_fields(m._youth)})


def model_from_bytes(cls: type[OnlineDawidSkene], b: bytes | bytearray | memoryview | str) -> OnlineDawidSkene:
    """The model of a format-3 record (older models, with another candidate list, are refused: refit them with
    ``llmens fit``)."""
    d = orjson.loads(b)
    if d.get("format") != FORMAT:
        raise ValueError(f"model format {d.get('format')} is not {FORMAT}")
    m = cls(None, families=dict(d["families"]), **d["config"])
    m.add_classes(d["classes"])
    m.add_workers(d["workers"])
    J, K = len(m.workers_), len(m.classes_)
    m.S = np.asarray(d["S"], dtype=float).reshape(J, K, K)
    m.S_class = np.asarray(d["S_class"], dtype=float)
    m.S_hard = np.asarray(d["S_hard"], dtype=float).reshape(J, K, K)
    m.S_hard_class = np.asarray(d["S_hard_class"], dtype=float)
    m.score = np.asarray(d["score"], dtype=float)
    m.score_m2 = np.asarray(d["score_m2"], dtype=float).reshape(N_CANDIDATES, N_CANDIDATES)
    m.score_votes = float(d["score_votes"])
    m.pairs = np.asarray(d["pairs"], dtype=float).reshape(2, J, J)
    m.version, m.t, m.q, m.n_items_ = d["version"], d["t"], d["q"], d["n_items"]
    if d.get("young"):
        m._youth = _read_youth(d["young"], d.get("young_gold", ()))
        m._copy_counts.clear()
    m._refresh()
    return m
