"""Cost-aware adaptive querying (issue 7): ask LLMs in stages until asking the rest could not pay off.

Pure logic over :class:`~llmens_core.llm.config.EndpointConfig` and the online model; the caller does the I/O::

    policy = AdaptivePolicy(endpoints)
    votes = {a: {} for a in attrs}              # attribute -> {llm: label}
    todo, asked = list(attrs), []
    for stage in policy.plan(pid, models, attrs):
        for v in await gateway.label(product, todo, llms=stage): votes[v.attribute][v.llm] = v.label
        asked += stage
        todo = policy.unsettled(models, votes, todo, asked=asked)
        if not todo:
            break
    reason = policy.reason(pid, unsettled=todo)

Without ``models`` the policy behaves as before (stages cheapest first; ``should_stop(posteriors)`` stops once
every attribute's max posterior reaches ``confidence_target``): the streaming worker's calls keep working.

**Stopping rule (``unsettled``): expected accuracy gain.** For an attribute with votes ``v`` the live model
gives the posterior ``p`` and the decision ``d = argmax p``. Asking every LLM not asked yet (``R``) would give
the full fan-out decision; under the model its expected accuracy gain over ``d`` is

    gain = E_{v_R ~ p(v_R | v)} [ max_k q(k | v, v_R) - q(d | v, v_R) ]

(``q`` the model's posterior with all votes, ``p(v_R | v) = sum_k p_k prod_j theta_j[k, l_j]``). Each term is
>= 0 and is 0 exactly when the outcome does not change the decision, so ``gain = 0`` iff no answer of the
unasked LLMs can flip ``d``, and a weak LLM that could flip the decision only at random (no better than ``d``)
adds little: "could the rest change my mind *for the better*", which is what full fan-out buys. The attribute
is settled when ``gain <= max_gain``. It is computed exactly (enumerating the unasked LLMs' answers) when there
are at most ``exact_outcomes`` combinations, else by Monte Carlo stratified by true class (``samples`` draws per
class with posterior > 1e-6; the mass of the other classes is added to ``gain`` as if it were lost), with a
random generator seeded by the votes, so a decision is reproducible. Abstentions of unasked LLMs are not
modelled (every unasked LLM is assumed to answer: more gain, i.e. more asking, than reality).

* ``max_gain=0.03``: an attribute may stop when full fan-out would add at most 3 points of expected accuracy
  *on that item*. Most stops have a far smaller gain (two strong LLMs agreeing: < 0.001), so the measured loss
  is much lower; on ``bench/adaptive.py`` (pooled) 0.01 / 0.02 / 0.03 / 0.04 measured +0.10 / -0.13 / -0.16 /
  -0.16 points for 0.513 / 0.498 / 0.487 / 0.481 of the calls: the loss is flat there (one decision in 3,083)
  and 0.03 leaves a margin on both goals (0.5 of the calls, -0.3 points). With a cold model (prior accuracy 0.7
  for every LLM, nothing learnt) and 3 LLMs left, two agreeing votes leave a gain of 0.030 for K = 2 (keep
  asking), 0.023 for K = 3 and 0.013 for K = 5 (stop, like the old 0.95 target did for K >= 5); two
  disagreeing votes 0.28 - 0.45 (ask on). Only the first ~10 chunks of products are asked with such a model.
* ``abstain_limit=2``: an attribute on which this many LLMs abstained (label ``None``) and none answered is
  not asked further (its decision is "failed", as with full fan-out when nobody answers). On the recorded GPT
  runs, attributes no run ever answered cost 8 extra calls per product otherwise; a failed call also abstains,
  and the stream retries products whose every vote failed (``all_failed``).

**Order (``plan(pid, models, attributes)``): learned value per cost.** Each LLM's value for a product is the
mutual information between the true class and its label under the live model (class prior ``priors_`` and its
confusion matrix), summed over the product's attributes; LLMs are ranked by value / cost, ties (e.g. a cold
model, where every LLM has the prior confusion) by price, and with ``diversify_families`` the best member of
every family comes before second members. ``cost="calls"`` (default) counts every request as 1 (what issue 7
measures, and what rate limits and latency pay); ``cost="price"`` divides by the configured price per 1k
tokens, which keeps the cheap LLMs first whatever they are worth (on the simulated panel prices differ 80x and
mutual information 3x): on the benchmark it spends fewer dollars but 0.615 of the calls and -1.46 points, as two
weak cheap LLMs agreeing wrongly look settled; ``cost="calls"`` spends 0.79 of the dollars on the simulated
panel (the strong LLMs are the expensive ones) and 0.15 on the replay (the gpt-4 runs are rarely needed). The first stage holds ``first_stage`` LLMs, later stages ``stage_size`` each.

* ``first_stage=2``: one vote is rarely enough (the stopping rule almost never settles on one vote), so the
  first round trip asks two at once.
* ``exploration_share=0.05``: a deterministic 5% of products (by a hash of the product id and ``seed``) ask
  every enabled LLM in one stage, so every LLM's full confusion keeps being learned from an unbiased sample
  (also a newly added LLM, which the value order ranks low until it is known). The staged products add more:
  the weaker LLMs are still asked on every product where the first two disagree (about a third on the
  simulated panel). On the benchmark 10% instead of 5% costs 0.021 of the calls and measured no better (-0.23 points).
* ``confidence_target=0.95`` (legacy rule, ``should_stop``): with a cold model two agreeing votes give
  ``r^2 / (r^2 + K - 1)`` with ``r = 0.7 (K - 1) / 0.3``: 0.845 for K = 2, 0.956 for K = 5.
* ``set_endpoints`` swaps the configuration while running: a new LLM is asked from the next plan on (its votes
  use the prior confusion until the model learns it), a removed or disabled one is no longer planned.

**CPU.** ``plan`` and ``unsettled`` run in the streaming worker's event loop for every product and stage. What
depends only on a model's parameters (log confusion rows, their exponentials and CDFs, each LLM's mutual
information) is cached per model object and state (``version`` and the parameter arrays), at most
``_MAX_VIEWS`` models, least recently used dropped; ``expected_gain`` enumerates the outcomes as one broadcast
array, in closed form when no family pooling is involved. ``bench/adaptive_cpu.py`` (5 simulated LLMs, 2
attributes with warm models of 4 and 13 classes, a new model version every 32 products): 1.9 -> 0.19 ms per
product per stage on the development machine, same plans and stops as the plain implementation it keeps.

Measured on ``bench/adaptive.py`` (both datasets pooled, see README): cheapest first with the confidence rule
0.698 of the calls for -1.14 points; the defaults above 0.487 for -0.16
(replay 0.271 / -0.68, i.e. 2 of 295 decisions; simulated panel 0.525 / -0.11). Where the old rule lost accuracy: two
cheap, weak LLMs agreeing (sim-tiny 0.59 and sim-small 0.71 accurate agree wrongly on 6% of their agreements)
looked confident under the model; where it wasted calls: cheap LLMs first meant most products needed the strong
ones anyway (and attributes without a model yet in the benchmark asked everyone).
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from llmens_core.aggregation import OnlineDawidSkene
from llmens_core.llm.config import EndpointConfig

__all__ = ["AdaptivePolicy", "REASONS", "ask_in_stages", "expected_gain", "informativeness"]

REASONS = ("explore", "confident", "exhausted")
"""Why a product stopped being asked: it was an exploration product (every LLM asked), every attribute was
settled (confidence target reached, or with ``unsettled`` nothing left to gain), or every planned LLM was asked
without that."""

COSTS = ("calls", "price")


def _price(ep: EndpointConfig) -> float:
    return float(ep.price_in_per_1k) + float(ep.price_out_per_1k)


class _ModelView:
    """Per-model quantities the policy needs, computed once per model state instead of once per product.

    Valid while the model is the same object, at the same ``version`` and with the same ``_log_theta`` array (the
    model's M-step, ``_refresh``, builds a new one: this also catches ``add_workers``/``add_classes``/
    ``set_families``, which change the parameters without a new ``version``). Per LLM: its log confusion rows
    (the prior centre for an LLM the model does not know), their transpose and row-wise CDF (answer draws), and
    its :func:`informativeness`; filled lazily, so a new LLM of the policy is simply one more entry.
    """

    __slots__ = ("ref", "version", "log_theta", "_prior", "rows", "rows_t", "probs", "cdf", "info")

    def __init__(self, model: OnlineDawidSkene, ref):
        self.ref = ref
        self.version = model.version
        self.log_theta = getattr(model, "_log_theta", None)
        self._prior: np.ndarray | None = None
        self.rows: dict = {}
        self.rows_t: dict = {}
        self.probs: dict = {}
        self.cdf: dict = {}
        self.info: dict = {}

    def valid(self, model: OnlineDawidSkene) -> bool:
        return (self.ref() is model and self.version == model.version
                and self.log_theta is getattr(model, "_log_theta", None))

    def log_rows(self, model: OnlineDawidSkene, llm: Hashable) -> np.ndarray:
        lt = self.rows.get(llm)
        if lt is None:
            j = model._widx.get(llm)
            if j is not None:
                lt = model._log_theta[j]
            else:
                if self._prior is None:
                    self._prior = np.log(model._prior_theta)
                lt = self._prior
            self.rows[llm] = lt
        return lt

    def log_rows_t(self, model: OnlineDawidSkene, llm: Hashable) -> np.ndarray:
        """(label x true class) contiguous: ``log_rows(llm).T``."""
        lt = self.rows_t.get(llm)
        if lt is None:
            lt = self.rows_t[llm] = np.ascontiguousarray(self.log_rows(model, llm).T)
        return lt

    def theta(self, model: OnlineDawidSkene, llm: Hashable) -> np.ndarray:
        """``exp(log_rows(llm))``: P(label | true class)."""
        t = self.probs.get(llm)
        if t is None:
            t = self.probs[llm] = np.exp(self.log_rows(model, llm))
        return t

    def answer_cdf(self, model: OnlineDawidSkene, llm: Hashable) -> np.ndarray:
        """Row-wise CDF of ``llm``'s answer given each true class (true class x label)."""
        c = self.cdf.get(llm)
        if c is None:
            c = self.cdf[llm] = np.cumsum(self.theta(model, llm), axis=1)
        return c


_VIEWS: OrderedDict[int, _ModelView] = OrderedDict()
_MAX_VIEWS = 256
"""Models whose views are kept (least recently used dropped): the stream holds one model per attribute."""


_VIEWS_LOCK = threading.Lock()


def _view(model: OnlineDawidSkene) -> _ModelView | None:
    """The cached :class:`_ModelView` of ``model`` (rebuilt when the model changed); None if it cannot be cached.

    Keyed by ``id(model)``; the view holds a weak reference, so a new object at a recycled address is not taken
    for the old one (nor kept alive by the cache)."""
    key = id(model)
    with _VIEWS_LOCK:
        v = _VIEWS.get(key)
        if v is not None and v.valid(model):
            _VIEWS.move_to_end(key)
            return v
    try:
        ref = weakref.ref(model)
    except TypeError:  # an object without weak references: no caching
        return None
    v = _ModelView(model, ref)
    with _VIEWS_LOCK:
        _VIEWS[key] = v
        _VIEWS.move_to_end(key)
        while len(_VIEWS) > _MAX_VIEWS:
            _VIEWS.popitem(last=False)
    return v


def _log_rows(model: OnlineDawidSkene, llm: Hashable) -> np.ndarray:
    """log confusion (true class x label) of ``llm`` under ``model``; an unknown LLM gets the prior centre (as in
    ``model.posterior``)."""
    j = model._widx.get(llm)
    return model._log_theta[j] if j is not None else np.log(model._prior_theta)


def _informativeness(model: OnlineDawidSkene, lt: np.ndarray) -> float:
    theta = np.exp(lt)
    joint = model.priors_[:, None] * theta
    marginal = joint.sum(axis=0)
    return float(np.sum(joint * (np.log(theta) - np.log(marginal)[None, :])))


def informativeness(model: OnlineDawidSkene, llm: Hashable) -> float:
    """Mutual information (nats) between the true class and ``llm``'s label under ``model`` (its class prior and
    confusion matrix; the prior confusion for an LLM the model does not know). 0 for a model without classes.
    Cached per model state (see :class:`_ModelView`)."""
    if not model.classes_:
        return 0.0
    v = _view(model)
    if v is None:
        return _informativeness(model, _log_rows(model, llm))
    out = v.info.get(llm)
    if out is None:
        out = v.info[llm] = _informativeness(model, v.log_rows(model, llm))
    return out


def expected_gain(
    model: OnlineDawidSkene,
    votes: Mapping[Hashable, Hashable | None],
    remaining: Sequence[Hashable],
    *,
    samples: int = 64,
    exact_outcomes: int = 4096,
    seed: int = 0,
) -> float:
    """Expected accuracy gain, under ``model``, of also asking ``remaining`` (see the module docstring).

    ``E[max_k q(k | votes + answers) - q(d | votes + answers)]`` over the answers of ``remaining`` predicted by
    the model, ``d`` the current decision, ``q`` the model's posterior (family pooling included). Exact when
    ``K ** len(remaining) <= exact_outcomes``, else Monte Carlo with ``samples`` draws per likely class (seeded by
    the votes: reproducible). 0 when nothing remains; > 0 (exact) iff some answer of ``remaining`` flips ``d``.

    CPU (this runs in the stream's event loop): per-model quantities come from a cache (:class:`_ModelView`) and
    the outcomes are enumerated as one broadcast array. Without family pooling among ``votes`` and ``remaining``
    (every weight 1) the exact sum has a closed form without a softmax per outcome (see below), equal to the
    plain enumeration up to rounding (< 1e-15); with pooling, and by Monte Carlo, the arithmetic is the plain
    one in the same order (bit for bit). tests/core/test_adaptive.py compares both with the plain version.
    """
    K = len(model.classes_)
    rem = [w for w in dict.fromkeys(remaining) if w not in votes or votes[w] is None]
    if K == 0 or not rem:
        return 0.0
    view = _view(model)
    if view is None:
        view = _ModelView(model, None)  # uncached: used for this call only
    cidx = model._cidx
    asked = [(w, cidx[lab]) for w, lab in votes.items() if lab is not None and lab in cidx]
    cur = model.posterior(votes) if asked else model.priors_.copy()
    d = int(np.argmax(cur))
    # family weights once every remaining LLM has answered (the model pools a family's votes, see posterior())
    rho = model.family_rho
    if rho:
        fam_of = model._family_of
        fams = [fam_of(w) for w, _ in asked] + [fam_of(w) for w in rem]
        n_fam: dict = {}
        for f in fams:
            n_fam[f] = n_fam.get(f, 0) + 1
        wall = [1.0 / (1.0 + rho * (n_fam[f] - 1)) for f in fams]
    else:
        wall = [1.0] * (len(asked) + len(rem))
    base = model._log_pi.copy()
    for (w, k), wt in zip(asked, wall, strict=False):
        base += wt * view.log_rows(model, w)[:, k]
    wts = wall[len(asked):]
    R = len(rem)

    if exact_outcomes >= K**R:
        if all(wt == 1.0 for wt in wall):
            # no family pooling among these votes: the posterior with all votes is cur * likelihood, so
            # P(o) q(k | o) = cur_k prod_r theta_r[k, l_r] =: M[k, o] and the gain is sum_o max_k M - M[d]:
            # no softmax, no exp over the outcomes (equal to the general form below up to rounding, ~1e-16)
            M = cur.reshape(K, 1)
            for w in rem:
                M = (M[:, :, None] * view.theta(model, w)[:, None, :]).reshape(K, -1)
            return float((M.max(axis=0) - M[d]).sum())
        # outcome (l_1, .., l_R) on axes 0..R-1 (itertools.product order), true class on the last axis
        like = final = None
        for r, (w, wt) in enumerate(zip(rem, wts, strict=True)):
            cols = view.log_rows_t(model, w).reshape((1,) * r + (K,) + (1,) * (R - 1 - r) + (K,))
            like = cols if like is None else like + cols
            final = (base + wt * cols) if final is None else final + wt * cols
        like = like.reshape(-1, K)
        final = np.ascontiguousarray(final).reshape(-1, K)
        prob = np.exp(like) @ cur  # predictive probability of each outcome
        return float(np.dot(prob, _gain_rows(final, d)))
    key = repr((seed, sorted((str(w), str(lab)) for w, lab in votes.items()), [str(w) for w in rem]))
    rng = np.random.default_rng(int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big"))
    likely = np.nonzero(cur > 1e-6)[0]
    L = len(likely)
    # answer draws of every remaining LLM at once (the same stream as R successive draws)
    u = rng.random((R, L, samples, 1))
    cdf = np.stack([view.answer_cdf(model, w)[likely] for w in rem])  # (R, L, K)
    u *= cdf[:, :, None, -1:]
    labs = np.minimum((u > cdf[:, :, None, :]).sum(axis=3), K - 1)  # (R, L, S)
    final = np.broadcast_to(base, (L, samples, K)).copy()
    for r, (w, wt) in enumerate(zip(rem, wts, strict=True)):
        final += wt * view.log_rows_t(model, w)[labs[r]]
    return float(np.dot(cur[likely], _gain_rows(final, d).mean(axis=1)) + cur[cur <= 1e-6].sum())


def _gain_rows(final: np.ndarray, d: int) -> np.ndarray:
    """``max_k q_k - q_d`` of the softmax ``q`` of every row of ``final`` (overwritten). As ``q = e / s``
    (``e = exp(final - max)``, ``s`` its row sum) and dividing by ``s > 0`` is monotone, ``max q = max e / s``:
    the same numbers as normalising the whole array, without the array-sized division."""
    final -= final.max(axis=-1, keepdims=True)
    np.exp(final, out=final)
    s = final.sum(axis=-1)
    return final.max(axis=-1) / s - final[..., d] / s


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
    ):
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
    votes: list[Any] = []
    by_attr: dict[str, dict] = {a: {} for a in attributes}
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
