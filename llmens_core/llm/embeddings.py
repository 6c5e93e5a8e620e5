"""An embedding member: classify by cosine similarity between the product text and label descriptions.

Any OpenAI-compatible ``/v1/embeddings`` endpoint serves it (llama.cpp, vLLM, OpenAI, the MiniLM server of
``deploy/real-llms``). One request per product: ``input`` is the product text followed by the descriptions of
labels this endpoint has not embedded yet (each description is embedded once per endpoint and kept), so after
the first products a vote costs one embedding of one short text, a fraction of a generation. The vote for an
attribute is the class (labels and ``none``) whose description is most similar to the product text; its errors
come from a different mechanism than a generator's (no instruction following, no decoding), which is what an
ensemble wants from a member.

A label's description is its words and synonyms from the schema (``"material: metal"``,
``"gender: female, women, ladies, ..."``); ``none`` is ``"<attribute>: not stated"``. Nothing is tuned.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from llmens_core.events import NOT_PRESENT
from llmens_core.schema import Attribute

__all__ = ["EmbeddingIndex", "classify", "label_descriptions", "request_inputs", "response_vectors"]

_DESCRIPTIONS: dict[tuple[str, tuple[str, ...]], list[tuple[str, str]]] = {}


def label_descriptions(attr: Attribute) -> list[tuple[str, str]]:
    """``[(class, description)]`` for every class of ``attr`` (its labels, then ``none``), memoised."""
    key = (attr.name, attr.labels)
    hit = _DESCRIPTIONS.get(key)
    if hit is None:
        words = attr.name.replace("_", " ")
        hit = []
        for label in attr.labels:
            syn = [s for s in attr.synonyms.get(label, ()) if s != label]
            hit.append((label, f"{words}: {', '.join([label.replace('_', ' '), *syn])}"))
        hit.append((NOT_PRESENT, f"{words}: not stated"))
        _DESCRIPTIONS[key] = hit
    return hit


def _unit(m: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, (n, d) -> (n, d); zero rows stay zero."""
    n = np.linalg.norm(m, axis=-1, keepdims=True)
    return m / np.where(n > 0, n, 1.0)


def classify(product: np.ndarray, labels: np.ndarray, classes: list[str]) -> tuple[str, float]:
    """(best class, its cosine similarity): ``product`` (d,), ``labels`` (K, d) unit rows, ``classes`` K names."""
    sims = labels @ _unit(product[None, :])[0]  # (K,)
    best = int(np.argmax(sims))
    return classes[best], float(sims[best])


class EmbeddingIndex:
    """Label-description vectors per endpoint (``(base_url, model)``), filled from embedding responses."""

    def __init__(self) -> None:
        self._vectors: dict[tuple[str, str], dict[str, np.ndarray]] = {}

    def missing(self, endpoint: tuple[str, str], attributes: tuple[Attribute, ...]) -> list[str]:
        """Descriptions of ``attributes`` this endpoint has no vector for yet (no duplicates, stable order)."""
        have = self._vectors.get(endpoint, {})
        return list(dict.fromkeys(d for a in attributes for _, d in label_descriptions(a) if d not in have))

    def add(self, endpoint: tuple[str, str], texts: list[str], vectors: np.ndarray) -> None:
        """Keep ``vectors`` (n, d) for ``texts`` (n), as unit rows."""
        table = self._vectors.setdefault(endpoint, {})
        for t, v in zip(texts, _unit(vectors), strict=True):
            table[t] = v

    def answer(self, endpoint: tuple[str, str], attributes: tuple[Attribute, ...], product: np.ndarray
               ) -> dict[str, str]:
        """``{attribute: class}`` for a product vector (d,); KeyError when a description was never embedded."""
        table = self._vectors[endpoint]
        out = {}
        for a in attributes:
            descs = label_descriptions(a)
            labels = np.stack([table[d] for _, d in descs])  # (K, d)
            out[a.name], _ = classify(product, labels, [c for c, _ in descs])
        return out


def response_vectors(data: Any, n: int) -> np.ndarray:
    """The ``data[i].embedding`` rows of an embeddings response, ordered by ``index``: (n, d) float32.

    Raises ``ValueError`` when the response does not hold exactly ``n`` equal-length vectors."""
    rows = data["data"] if isinstance(data, dict) else None
    if not isinstance(rows, list) or len(rows) != n:
        raise ValueError(f"expected {n} embeddings, got {len(rows) if isinstance(rows, list) else 'none'}")
    ordered = sorted(rows, key=lambda r: r.get("index", 0) if isinstance(r, dict) else 0)
    m = np.asarray([r["embedding"] for r in ordered], dtype=np.float32)
    if m.ndim != 2 or m.shape[0] != n:
        raise ValueError("embeddings of unequal length")
    return m


def request_inputs(body: bytes) -> list[str]:
    """The ``input`` texts of an embeddings request body this module built."""
    return orjson.loads(body)["input"]
