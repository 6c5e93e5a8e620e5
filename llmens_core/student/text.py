"""A product's own text as hashed features, and how familiar that text is to a student.

Features are scikit-learn's ``HashingVectorizer`` word 1-2-grams and character 2-4-grams (within word
boundaries) of the title, category and description: stateless, so every worker computes the same vector with no
vocabulary to ship, and a student is only its weights. Familiarity is the share of the text's words the student
has learnt from (a bit per word hash): text in another language, or from a category never seen, scores low, and
its products are measured apart (:mod:`.measure`) before the student may decide them alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import HashingVectorizer

__all__ = ["BUCKETS", "FAMILIAR_SHARE", "DESCRIPTION_CHARS", "TextFeatures", "product_text"]

BUCKETS = ("text", "unfamiliar", "empty")
"""How a product's text stands for a student: known words, mostly unknown words (< :data:`FAMILIAR_SHARE`), no
words at all. Each is measured separately."""

FAMILIAR_SHARE = 0.5
"""A text is familiar when at least this share of its distinct words was in texts the student learnt from: the
bulk of it, so a title in another language with a brand name or a size in it is not."""

DESCRIPTION_CHARS = 1000
"""Descriptions are cut here: titles carry most attribute values, and long descriptions would dominate them."""


def product_text(title: str | None, description: str | None = None, category: str | None = None) -> str:
    """The text a student reads: title, category and the start of the description, one string."""
    parts = [title or "", category or "", (description or "")[:DESCRIPTION_CHARS]]
    return " \n ".join(p.strip() for p in parts if p and p.strip())


@dataclass(frozen=True)
class TextFeatures:
    """Hashed features of texts: ``2 * n_features`` columns (words, then characters), L2-normalised each."""

    n_features: int = 2**16

    def __post_init__(self):
        if self.n_features < 16 or self.n_features & (self.n_features - 1):
            raise ValueError(f"n_features must be a power of two >= 16, got {self.n_features}")

    @property
    def width(self) -> int:
        return 2 * self.n_features

    def _words(self, ngrams: tuple[int, int]) -> HashingVectorizer:
        return HashingVectorizer(n_features=self.n_features, ngram_range=ngrams, alternate_sign=False,
                                 lowercase=True)

    def transform(self, texts: list[str]) -> sp.csr_matrix:
        """Sparse (n, width) features of ``texts``."""
        chars = HashingVectorizer(n_features=self.n_features, analyzer="char_wb", ngram_range=(2, 4),
                                  alternate_sign=False, lowercase=True)
        return sp.hstack([self._words((1, 2)).transform(texts), chars.transform(texts)], format="csr")

    def word_hashes(self, texts: list[str]) -> list[np.ndarray]:
        """Per text, the distinct hashes (column ids) of its words (unigrams), for familiarity."""
        m = self._words((1, 1)).transform(texts).tocsr()
        return [m.indices[m.indptr[i]:m.indptr[i + 1]] for i in range(len(texts))]
