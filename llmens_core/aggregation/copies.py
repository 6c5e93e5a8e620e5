"""Copies of items already learnt: the online model's count of vote patterns, and the test that flags a copy.

A catalogue re-lists products, and their votes come again. A copy of an item the model has learnt is not
held-out data, and ``full`` with one latent class per vote pattern predicts it from its pattern (the simulated
panel with every product 25 times: -0.86 nats per vote for ``full`` against -1.43 for ``onecoin+class-prior``,
which the batch race, keeping copies in one fold, scores -1.63 and -1.30; one pass then ended at 93.2-98.6 %
against batch's 100). So the items of a vote pattern that has come more often among the items learnt than the
model explains (:func:`.auto.improbably_repeated`, the batch race's test) are not scored. The counts are working
memory, bounded by :data:`MAX_PATTERNS`.
"""

from __future__ import annotations

import numpy as np

from llmens_core.aggregation.auto import improbably_repeated, set_keys

__all__ = ["MAX_PATTERNS", "CopyCounter"]

MAX_PATTERNS = 1 << 18
"""Distinct vote patterns counted for the copy test before the counts start again (bounds the working memory)."""


class CopyCounter:
    """How many items learnt had each vote pattern, and each voter set (keys of :func:`.auto.set_keys`)."""

    def __init__(self) -> None:
        self.patterns: dict[int, int] = {}
        self.voter_sets: dict[int, int] = {}

    def clear(self) -> None:
        self.patterns.clear()
        self.voter_sets.clear()

    @staticmethod
    def keys(icode, wcode, lcode, n_items: int) -> tuple[np.ndarray, list[int], list[int]]:
        """Which items (n_items,) of a batch of codes (V,) have votes, and the key of each one's vote pattern and
        voter set."""
        voted = np.bincount(icode, minlength=n_items) > 0
        pattern = set_keys(icode, (wcode.astype(np.int64) << 20) + lcode, n_items)[voted].tolist()
        voters = set_keys(icode, wcode, n_items)[voted].tolist()
        return voted, pattern, voters

    def count(self, pattern: list[int], voters: list[int]) -> None:
        """Count items' pattern and voter-set keys (starting again when the patterns would pass the bound)."""
        if len(self.patterns) + len(pattern) > MAX_PATTERNS:
            self.clear()
        for counts, keys in ((self.patterns, pattern), (self.voter_sets, voters)):
            for k in keys:
                counts[k] = counts.get(k, 0) + 1

    def count_batch(self, icode, wcode, lcode, n_items: int) -> None:
        """Count every item of a batch of codes."""
        self.count(*self.keys(icode, wcode, lcode, n_items)[1:])

    def flag(self, icode, wcode, lcode, n_items: int, log_norm: np.ndarray, *, count: bool = True) -> np.ndarray:
        """Count the batch's items (unless ``count`` is False), and flag (n_items,) the items whose pattern has come
        more often among the items counted than the current model explains: the pattern's probability under it
        (``exp(log_norm)``, (n_items,): the log joint's normaliser), times the items with the same voters, as the
        mean of a Poisson count."""
        voted, pattern, voters = self.keys(icode, wcode, lcode, n_items)
        if count:
            self.count(pattern, voters)
        log_p = log_norm[voted]
        seen = np.fromiter((self.patterns.get(k, 1) for k in pattern), dtype=float, count=len(pattern))
        same_voters = np.fromiter((self.voter_sets.get(k, 1) for k in voters), dtype=float, count=len(voters))
        flagged = np.zeros(n_items, dtype=bool)
        flagged[voted] = improbably_repeated(seen, same_voters * np.exp(log_p), len(self.patterns))
        return flagged
