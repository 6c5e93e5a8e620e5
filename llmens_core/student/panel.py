"""The students of every attribute, the share of products on which they may never decide alone, and their votes.

A :class:`Students` hands out each attribute's :class:`.classifier.AttributeStudent` (created cold, with the
schema's classes, on first use, as the stream's model registry creates DS models). Its ``exploration_share`` is
a deterministic share of product ids (a hash, as the adaptive policy's) on which the student still votes but the
LLMs are always asked: the student keeps being measured against the panel on products it did not pick itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence

from llmens_core.student.classifier import AttributeStudent, Guess

__all__ = ["STUDENT", "Students", "hash_share"]

STUDENT = "student"
"""The student's worker name among the votes (the DS model learns its confusion like an LLM's)."""


def hash_share(product_id: str, share: float, salt: str) -> bool:
    """True for a deterministic share ``share`` of product ids (uniform 64-bit hash of ``salt`` and the id)."""
    if share <= 0.0:
        return False
    if share >= 1.0:
        return True
    h = hashlib.blake2b(f"{salt}\x00{product_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2.0**64 < share


class Students(dict):
    """attribute -> :class:`AttributeStudent`, created on first use by ``factory(attribute)``.

    Args:
        factory: makes a cold student for an attribute (e.g. with the schema's classes).
        exploration_share: share of products on which no student may decide alone.
        seed: salt of the exploration hash.
    """

    def __init__(self, factory: Callable[[str], AttributeStudent], *, exploration_share: float = 0.1,
                 seed: int = 0):
        super().__init__()
        if not 0.0 <= exploration_share <= 1.0:
            raise ValueError(f"exploration_share must be in [0, 1], got {exploration_share}")
        self.factory = factory
        self.exploration_share = float(exploration_share)
        self.seed = int(seed)

    def __missing__(self, attribute: str) -> AttributeStudent:
        s = self[attribute] = self.factory(attribute)
        return s

    def explore(self, product_id: str) -> bool:
        """True when the LLMs must be asked on this product whatever the students say."""
        return hash_share(product_id, self.exploration_share, f"student-{self.seed}")

    def guesses(self, text: str, attributes: Sequence[str]) -> dict[str, Guess]:
        """Each attribute's student's answer for one product's text (its features computed once per hash width)."""
        featurised: dict = {}
        out = {}
        for a in attributes:
            student = self[a]
            if student.features not in featurised:
                featurised[student.features] = student.featurise([text])
            out[a] = student.guess_many([text], featurised[student.features])[0]
        return out

    @staticmethod
    def votes(guesses: Mapping[str, Guess]) -> dict[str, dict[str, str]]:
        """``{attribute: {"student": label}}`` for the attributes where the student votes (abstentions left out,
        so that they never count as an LLM's abstention)."""
        return {a: {STUDENT: g.vote} for a, g in guesses.items() if g.vote is not None}
