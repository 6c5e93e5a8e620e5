"""Cost-aware adaptive querying (issue 7): ask LLMs in stages, cheapest first, until the live model is confident.

Pure logic over :class:`~llmens_core.llm.config.EndpointConfig` and the online model; the caller does the I/O::

    policy = AdaptivePolicy(endpoints)
    votes = {}                                   # attribute -> {llm: label}
    for stage in policy.plan(pid):
        for v in await gateway.label(product, policy.pending(models, votes, attrs), llms=stage): ...
        if policy.should_stop(policy.posteriors(models, votes, attrs)):
            break
    reason = policy.reason(pid, policy.posteriors(models, votes, attrs))

Defaults and why:

* ``confidence_target=0.95``: stop once every asked attribute's max posterior under the live model reaches it.
* ``first_stage=2``: one vote can never be trusted alone, so the first stage holds the two cheapest LLMs. With a
  *cold* model (prior accuracy 0.7, uniform class prior) two agreeing votes give a posterior of
  ``r^2 / (r^2 + K - 1)`` with ``r = 0.7 (K - 1) / 0.3``: 0.845 for K = 2, 0.956 for K = 5. So a cold model keeps
  asking on small label sets (safe: more votes while nothing is known) and the calls drop as the model learns that
  the LLMs are accurate. ``stage_size=1`` then adds one LLM at a time in price order.
* ``exploration_share=0.1``: a deterministic 10% of products (by a hash of the product id and ``seed``) ask every
  enabled LLM in one stage, so every LLM's full confusion keeps being learned (also the expensive ones that the
  staged plan rarely reaches, and a newly added LLM).
* ``set_endpoints`` swaps the configuration while running: a new LLM is asked from the next plan on (its votes
  use the prior confusion until the model learns it), a removed or disabled one is no longer planned.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from llmens_core.aggregation import OnlineDawidSkene
from llmens_core.llm.config import EndpointConfig

__all__ = ["AdaptivePolicy", "REASONS"]

REASONS = ("explore", "confident", "exhausted")
"""Why a product stopped being asked: it was an exploration product (every LLM asked), every attribute reached
the confidence target, or every planned LLM was asked without reaching it."""


def _price(ep: EndpointConfig) -> float:
    return float(ep.price_in_per_1k) + float(ep.price_out_per_1k)


class AdaptivePolicy:
    """Staged, cheapest-first querying plan with a confidence stopping rule.

    Args:
        endpoints: the configured LLMs (disabled ones are never planned).
        confidence_target: stop when every attribute's max posterior is >= this (in (0, 1]).
        exploration_share: share of products (in [0, 1]) that ask every LLM at once.
        first_stage: number of LLMs in the first stage (the cheapest ones).
        stage_size: number of LLMs in each later stage.
        stages: explicit stages (lists of LLM names) instead of the price order; names not configured or disabled
            are dropped, configured LLMs not listed form a last stage (cheapest first).
        seed: salt of the exploration hash (changes which products explore, not how many).
        diversify_families: order the cheapest LLM of every family (``EndpointConfig.family``, else the name
            before ``|``) before second members of a family, each group cheapest first.
    """

    def __init__(
        self,
        endpoints: Sequence[EndpointConfig],
        *,
        confidence_target: float = 0.95,
        exploration_share: float = 0.1,
        first_stage: int = 2,
        stage_size: int = 1,
        stages: Sequence[Sequence[str]] | None = None,
        seed: int = 0,
        diversify_families: bool = True,
    ):
        self.diversify_families = bool(diversify_families)
        if not 0.0 < confidence_target <= 1.0:
            raise ValueError(f"confidence_target must be in (0, 1], got {confidence_target}")
        if not 0.0 <= exploration_share <= 1.0:
            raise ValueError(f"exploration_share must be in [0, 1], got {exploration_share}")
        if first_stage < 1 or stage_size < 1:
            raise ValueError("first_stage and stage_size must be >= 1")
        self.confidence_target = float(confidence_target)
        self.exploration_share = float(exploration_share)
        self.first_stage = int(first_stage)
        self.stage_size = int(stage_size)
        self.seed = int(seed)
        self._explicit = [list(s) for s in stages] if stages is not None else None
        self.set_endpoints(endpoints)

    # ------------------------------------------------------------------ configuration
    def set_endpoints(self, endpoints: Sequence[EndpointConfig]) -> None:
        """Hot reconfiguration: the next ``plan`` uses these LLMs (added ones are asked, removed ones are not)."""
        eps = [ep for ep in endpoints if ep.enabled]
        names = [ep.name for ep in eps]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate endpoint names: {names}")
        by_price = sorted(eps, key=lambda e: (_price(e), e.name))
        if self.diversify_families:
            # cheapest LLM of each family not yet planned first: the aggregator pools a family's votes into about
            # one vote, so a second run of an already-asked base model adds little evidence for its price
            fam = {ep.name: ep.family or ep.name.split("|", 1)[0] for ep in eps}
            seen: set = set()
            first, rest = [], []
            for ep in by_price:
                (rest if fam[ep.name] in seen else first).append(ep)
                seen.add(fam[ep.name])
            by_price = first + rest
        self.order: list[str] = [ep.name for ep in by_price]
        """Enabled LLM names, cheapest first (ties by name; with ``diversify_families`` one per family first)."""
        self.prices: dict[str, float] = {ep.name: _price(ep) for ep in eps}
        if self._explicit is not None:
            enabled = set(self.order)
            st = [[n for n in s if n in enabled] for s in self._explicit]
            listed = {n for s in st for n in s}
            rest = [n for n in self.order if n not in listed]
            self.stages = [s for s in st if s] + ([rest] if rest else [])
        else:
            o = self.order
            self.stages = [o[: self.first_stage]] + [
                o[i : i + self.stage_size] for i in range(self.first_stage, len(o), self.stage_size)
            ]
            self.stages = [s for s in self.stages if s]

    @property
    def llms(self) -> list[str]:
        return list(self.order)

    # ------------------------------------------------------------------ planning
    def explore(self, product_id: str) -> bool:
        """Deterministic: True for a share ``exploration_share`` of product ids (uniform 64-bit hash)."""
        if self.exploration_share <= 0.0:
            return False
        if self.exploration_share >= 1.0:
            return True
        h = hashlib.blake2b(f"{self.seed}\x00{product_id}".encode(), digest_size=8).digest()
        return int.from_bytes(h, "big") / 2.0**64 < self.exploration_share

    def plan(self, product_id: str) -> list[list[str]]:
        """Stages to ask for one product, in order: a partition of the enabled LLMs (one stage when exploring)."""
        if not self.order:
            return []
        if self.explore(product_id):
            return [list(self.order)]
        return [list(s) for s in self.stages]

    # ------------------------------------------------------------------ stopping
    @staticmethod
    def posteriors(
        models: Mapping[str, OnlineDawidSkene],
        votes: Mapping[str, Mapping[Hashable, Hashable | None]],
        attributes: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Posterior of each attribute under the live model: ``models[attr].posterior(votes[attr])``.

        An attribute whose model has no classes yet (nothing learnt, nothing voted) gets an empty array, which
        never counts as confident.
        """
        out = {}
        for a in votes if attributes is None else attributes:
            m = models.get(a)
            v = votes.get(a, {})
            if m is None or not m.classes_ or not any(lab is not None for lab in v.values()):
                out[a] = np.zeros(0)
            else:
                out[a] = m.posterior(v)
        return out

    def confident(self, posterior: np.ndarray) -> bool:
        return len(posterior) > 0 and float(np.max(posterior)) >= self.confidence_target

    def should_stop(self, posteriors: Mapping[str, np.ndarray]) -> bool:
        """True when every attribute's max posterior is >= ``confidence_target`` (and there is at least one)."""
        return bool(posteriors) and all(self.confident(p) for p in posteriors.values())

    def pending(self, posteriors: Mapping[str, np.ndarray]) -> list[str]:
        """Attributes not yet confident (the ones the next stage needs to ask)."""
        return [a for a, p in posteriors.items() if not self.confident(p)]

    def reason(self, product_id: str, posteriors: Mapping[str, np.ndarray]) -> str:
        """Why the product stopped being asked (call after the last stage asked): one of :data:`REASONS`."""
        if self.explore(product_id):
            return "explore"
        return "confident" if self.should_stop(posteriors) else "exhausted"

    def __repr__(self) -> str:
        return (
            f"AdaptivePolicy(stages={self.stages}, confidence_target={self.confidence_target}, "
            f"exploration_share={self.exploration_share})"
        )
