"""The staged querying policy (issue 7): which LLMs to ask for a product, in which order, and when to stop.

Pure logic over :class:`~llmens_core.llm.config.EndpointConfig` and the live online models; the caller does
the I/O (see :func:`ask_in_stages`). Order: learned value per cost (:func:`.value.informativeness`, summed
over the product's attributes); stop: an attribute is settled when asking every LLM not asked yet has an
expected accuracy gain (:func:`.value.expected_gain`) of at most ``max_gain``. The measurements behind the
defaults are in ``docs/adaptive.md``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from llmens_core.adaptive.value import expected_gain, informativeness
from llmens_core.aggregation import OnlineDawidSkene
from llmens_core.llm.config import EndpointConfig

__all__ = ["AdaptivePolicy", "REASONS", "ask_in_stages"]

REASONS = ("warmup", "explore", "confident", "exhausted", "student")
"""Why a product stopped being asked: it was an exploration product (every LLM asked), every attribute was
settled (confidence target reached, or with ``unsettled`` nothing left to gain), every planned LLM was asked
without that, or the student's votes settled every attribute and no LLM was asked
(:func:`.cascade.ask_student_first`)."""

COSTS = ("calls", "price")


def _price(ep: EndpointConfig) -> float:
    return float(ep.price_in_per_1k) + float(ep.price_out_per_1k)


class AdaptivePolicy:
    """Staged querying plan (cheapest first, or by learned value per cost) with a stopping rule.

    Args:
        endpoints: the configured LLMs (disabled ones are never planned).
        confidence_target: legacy rule (``should_stop``): stop when every attribute's max posterior is >= this.
        exploration_share: share of products (in [0, 1]) that ask every LLM at once.
        first_stage: number of LLMs in the first stage.
        stage_size: number of LLMs in each later stage.
        stages: explicit stages (lists of LLM names) instead of the price order; names not configured or disabled
            are dropped, configured LLMs not listed form a last stage (cheapest first). Also used with models.
        seed: salt of the exploration hash (changes which products explore, not how many) and of the sampling.
        diversify_families: order the best LLM of every family (``EndpointConfig.family``, else the name
            before ``|``) before second members of a family.
        max_gain: ``unsettled`` keeps asking an attribute while the expected accuracy gain of asking every
            remaining LLM exceeds this (in [0, 1]).
        cost: what one call costs when ``plan`` ranks by value per cost: ``"calls"`` (1 each) or ``"price"``.
        abstain_limit: ``unsettled`` stops asking an attribute that this many LLMs abstained on while none
            answered (``None``: never).
        samples, exact_outcomes: accuracy of :func:`expected_gain`.
    """

    def __init__(
        self,
        endpoints: Sequence[EndpointConfig],
        *,
        confidence_target: float = 0.95,
        exploration_share: float = 0.05,
        first_stage: int = 2,
        stage_size: int = 1,
        stages: Sequence[Sequence[str]] | None = None,
        seed: int = 0,
        diversify_families: bool = True,
        max_gain: float = 0.03,
        cost: str = "calls",
        abstain_limit: int | None = 2,
        samples: int = 64,
        exact_outcomes: int = 4096,
        warmup_items: int = 0,
    ):
        if warmup_items < 0:
            raise ValueError("warmup_items must be >= 0")
        self.warmup_items = int(warmup_items)
        self._full_panels: dict[str, int] = {}
        self.diversify_families = bool(diversify_families)
        if not 0.0 < confidence_target <= 1.0:
            raise ValueError(f"confidence_target must be in (0, 1], got {confidence_target}")
        if not 0.0 <= exploration_share <= 1.0:
            raise ValueError(f"exploration_share must be in [0, 1], got {exploration_share}")
        if first_stage < 1 or stage_size < 1:
            raise ValueError("first_stage and stage_size must be >= 1")
        if not 0.0 <= max_gain <= 1.0:
            raise ValueError(f"max_gain must be in [0, 1], got {max_gain}")
        if cost not in COSTS:
            raise ValueError(f"cost must be one of {COSTS}, got {cost!r}")
        if abstain_limit is not None and abstain_limit < 1:
            raise ValueError("abstain_limit must be >= 1 or None")
        if samples < 1 or exact_outcomes < 0:
            raise ValueError("samples must be >= 1 and exact_outcomes >= 0")
        self.confidence_target = float(confidence_target)
        self.exploration_share = float(exploration_share)
        self.first_stage = int(first_stage)
        self.stage_size = int(stage_size)
        self.seed = int(seed)
        self.max_gain = float(max_gain)
        self.cost = cost
        self.abstain_limit = abstain_limit
        self.samples = int(samples)
        self.exact_outcomes = int(exact_outcomes)
        self._explicit = [list(s) for s in stages] if stages is not None else None
        self.set_endpoints(endpoints)

    # ------------------------------------------------------------------ configuration
    def set_endpoints(self, endpoints: Sequence[EndpointConfig]) -> None:
        """Hot reconfiguration: the next ``plan`` uses these LLMs (added ones are asked, removed ones are not)."""
        eps = [ep for ep in endpoints if ep.enabled]
        names = [ep.name for ep in eps]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate endpoint names: {names}")
        self.prices: dict[str, float] = {ep.name: _price(ep) for ep in eps}
        self.families: dict[str, str] = {ep.name: ep.family or ep.name.split("|", 1)[0] for ep in eps}
        self.order: list[str] = self._diversified(sorted(names, key=lambda n: (self.prices[n], n)))
        """Enabled LLM names, cheapest first (ties by name; with ``diversify_families`` one per family first)."""
        if self._explicit is not None:
            enabled = set(self.order)
            st = [[n for n in s if n in enabled] for s in self._explicit]
            listed = {n for s in st for n in s}
            rest = [n for n in self.order if n not in listed]
            self.stages = [s for s in st if s] + ([rest] if rest else [])
        else:
            self.stages = self._staged(self.order)

    def _diversified(self, ranked: list[str]) -> list[str]:
        # best LLM of each family not yet planned first: the aggregator pools a family's votes into about one
        # vote, so a second run of an already-asked base model adds little evidence for its cost
        if not self.diversify_families:
            return ranked
        seen: set = set()
        first, rest = [], []
        for n in ranked:
            (rest if self.families[n] in seen else first).append(n)
            seen.add(self.families[n])
        return first + rest

    def _staged(self, order: list[str]) -> list[list[str]]:
        stages = [order[: self.first_stage]] + [
            order[i : i + self.stage_size] for i in range(self.first_stage, len(order), self.stage_size)
        ]
        return [s for s in stages if s]

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

    def value(self, models: Mapping[str, OnlineDawidSkene], attributes: Sequence[str]) -> dict[str, float]:
        """LLM -> learned value per cost for a product with ``attributes``: summed :func:`informativeness`
        over the attributes that have a model, divided by the cost of a call (``cost``)."""
        ms = [m for m in (models.get(a) for a in attributes) if m is not None and m.classes_]
        out = {}
        for n in self.order:
            c = 1.0 if self.cost == "calls" else max(self.prices[n], 1e-12)
            out[n] = sum(informativeness(m, n) for m in ms) / c
        return out

    def ranked(self, models: Mapping[str, OnlineDawidSkene], attributes: Sequence[str]) -> list[str]:
        """Enabled LLMs by learned value per cost (rounded to 1e-9, ties by price then name), families diversified."""
        v = self.value(models, attributes)
        return self._diversified(sorted(self.order, key=lambda n: (-round(v[n], 9), self.prices[n], n)))

    def warming_up(self, models: Mapping[str, OnlineDawidSkene] | None, attributes: Sequence[str]) -> bool:
        """True while an attribute has fewer than ``warmup_items`` items with every LLM's vote.

        Counted as the larger of the items its DS model has learned and the full panels this policy asked
        (the learner lags the stream by a mini-batch). A cold model cannot tell which LLMs to skip: it stops
        on the first two agreeing votes, and the LLMs it skips are never learned.
        """
        if not self.warmup_items:
            return False
        models = models or {}
        return any(max(float(getattr(models.get(a), "n_items_", 0.0)), self._full_panels.get(a, 0))
                   < self.warmup_items for a in attributes)

    def asked_everyone(self, attributes: Sequence[str]) -> None:
        """Count a full panel for each of ``attributes`` (warm-up)."""
        for a in attributes:
            self._full_panels[a] = self._full_panels.get(a, 0) + 1

    def plan(
        self,
        product_id: str,
        models: Mapping[str, OnlineDawidSkene] | None = None,
        attributes: Sequence[str] | None = None,
    ) -> list[list[str]]:
        """Stages to ask for one product, in order: a partition of the enabled LLMs (one stage when exploring).

        Without ``models`` (or with explicit ``stages``) the configured stages (cheapest first); with the live
        ``models`` and the product's ``attributes``, the order of :meth:`ranked`.
        """
        if not self.order:
            return []
        if self.explore(product_id):
            return [list(self.order)]
        if models is None or self._explicit is not None:
            return [list(s) for s in self.stages]
        return self._staged(self.ranked(models, list(attributes or ())))

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
        """Legacy rule: True when every attribute's max posterior is >= ``confidence_target`` (and there is one)."""
        return bool(posteriors) and all(self.confident(p) for p in posteriors.values())

    def pending(self, posteriors: Mapping[str, np.ndarray]) -> list[str]:
        """Attributes not yet confident (the ones the next stage needs to ask)."""
        return [a for a, p in posteriors.items() if not self.confident(p)]

    def gain(self, model: OnlineDawidSkene, votes: Mapping[Hashable, Hashable | None],
             asked: Sequence[str] = ()) -> float:
        """:func:`expected_gain` of asking every enabled LLM not in ``votes`` nor ``asked``."""
        remaining = [n for n in self.order if n not in votes and n not in asked]
        return expected_gain(model, votes, remaining, samples=self.samples, exact_outcomes=self.exact_outcomes,
                             seed=self.seed)

    def unsettled(
        self,
        models: Mapping[str, OnlineDawidSkene],
        votes: Mapping[str, Mapping[Hashable, Hashable | None]],
        attributes: Sequence[str] | None = None,
        *,
        asked: Sequence[str] = (),
    ) -> list[str]:
        """Attributes the next stage still needs to ask (empty: stop), by the expected-gain rule.

        An attribute is settled when asking every enabled LLM not yet asked about it (not in its votes nor in
        ``asked``) has an expected accuracy gain <= ``max_gain`` under its live model, or when ``abstain_limit``
        LLMs abstained on it and none answered. Without a model (or one without classes) it stays unsettled.
        """
        out = []
        for a in votes if attributes is None else attributes:
            m = models.get(a)
            v = votes.get(a, {})
            if not any(lab is not None for lab in v.values()):
                if self.abstain_limit is None or len(v) < self.abstain_limit:
                    out.append(a)
            elif m is None or not m.classes_ or self.gain(m, v, asked) > self.max_gain:
                out.append(a)
        return out

    def reason(self, product_id: str, posteriors: Mapping[str, np.ndarray] | None = None, *,
               unsettled: Sequence[str] | None = None) -> str:
        """Why the product stopped being asked (call after the last stage asked): one of :data:`REASONS`.

        With ``unsettled`` (the last result of :meth:`unsettled`) "confident" means every attribute settled,
        else the legacy rule on ``posteriors``.
        """
        if self.explore(product_id):
            return "explore"
        if unsettled is not None:
            return "exhausted" if unsettled else "confident"
        return "confident" if self.should_stop(posteriors or {}) else "exhausted"

    def __repr__(self) -> str:
        return (
            f"AdaptivePolicy(stages={self.stages}, max_gain={self.max_gain}, cost={self.cost!r}, "
            f"confidence_target={self.confidence_target}, exploration_share={self.exploration_share})"
        )


async def ask_in_stages(
    policy: AdaptivePolicy,
    label: Callable[[list[str], list[str]], Awaitable[list[Any]]],
    product_id: str,
    attributes: Sequence[str],
    models: Mapping[str, OnlineDawidSkene],
    *,
    rule: str = "gain",
) -> tuple[list[Any], dict[str, dict], list[str], str]:
    """Ask one product's LLMs stage by stage; the caller's ``label(attributes, llms)`` does the I/O.

    ``label`` returns votes (objects with ``attribute``, ``llm`` and ``label``). Later stages ask only the
    attributes not yet settled. ``rule`` "gain" orders by learned value and stops by :meth:`unsettled`;
    "confidence" keeps the configured (cheapest-first) stages and stops by :meth:`should_stop`.
    Returns (every vote, ``{attribute: {llm: label}}``, the LLMs asked, the reason asking stopped).
    """
    gain_rule = rule == "gain"
    if policy.warming_up(models, attributes):
        policy.asked_everyone(attributes)
        votes = list(await label(list(attributes), list(policy.order)))
        by_attr: dict[str, dict] = {a: {} for a in attributes}
        for v in votes:
            by_attr.setdefault(v.attribute, {})[v.llm] = v.label
        return votes, by_attr, list(policy.order), "warmup"
    votes: list[Any] = []
    by_attr = {a: {} for a in attributes}
    todo, asked = list(attributes), []
    posts: dict[str, np.ndarray] = {}
    for stage in policy.plan(product_id, models, attributes) if gain_rule else policy.plan(product_id):
        new = await label(todo, stage)
        votes += new
        for v in new:
            by_attr.setdefault(v.attribute, {})[v.llm] = v.label
        asked += stage
        if gain_rule:
            todo = policy.unsettled(models, by_attr, todo, asked=asked)
            if not todo:
                break
        else:
            posts = policy.posteriors(models, by_attr, attributes)
            if policy.should_stop(posts):
                break
            todo = policy.pending(posts)
    reason = policy.reason(product_id, unsettled=todo) if gain_rule else policy.reason(product_id, posts)
    return votes, by_attr, asked, reason
