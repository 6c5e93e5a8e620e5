"""CPU cost of the adaptive policy per product per stage: the current code vs the unoptimised reference.

The streaming worker calls ``AdaptivePolicy.plan(pid, models, attrs)`` once per product and
``unsettled(models, votes, todo, asked=asked)`` after every stage, inside its asyncio event loop, so this is time
the loop is blocked. Input of the same kind as the stream's: 5 simulated LLMs (accuracies and prices of
``llmens_core/llm/sim_default.yaml``), 2 attributes per product, warm online models with 4 and 13 classes
(``default_online`` after ``--train`` items labelled by the 5 LLMs, uniform errors). Each product's answers are
drawn up front (seeded), then both implementations run the same products stage by stage; their plans and
unsettled lists must be identical (checked). Reported: ms of CPU (``time.process_time``, best of ``--repeat``)
per product per stage. Last line: ``adaptive_policy_speedup=<reference / current>``.

The reference (``RefPolicy``, ``ref_informativeness``, ``ref_expected_gain``) is the implementation before the
caches and the vectorised enumeration (commit 9fbfcf7), kept verbatim here.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import sys
import time
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from llmens_core.adaptive import AdaptivePolicy  # noqa: E402
from llmens_core.aggregation import OnlineDawidSkene, default_online  # noqa: E402
from llmens_core.llm.config import EndpointConfig  # noqa: E402

# ---------------------------------------------------------------------- reference (unoptimised) implementation


def _ref_log_rows(model: OnlineDawidSkene, llm: Hashable) -> np.ndarray:
    j = model._widx.get(llm)
    return model._log_theta[j] if j is not None else np.log(model._prior_theta)


def ref_informativeness(model: OnlineDawidSkene, llm: Hashable) -> float:
    if not model.classes_:
        return 0.0
    theta = np.exp(_ref_log_rows(model, llm))
    joint = model.priors_[:, None] * theta
    marginal = joint.sum(axis=0)
    return float(np.sum(joint * (np.log(theta) - np.log(marginal)[None, :])))


def ref_expected_gain(
    model: OnlineDawidSkene,
    votes: Mapping[Hashable, Hashable | None],
    remaining: Sequence[Hashable],
    *,
    samples: int = 64,
    exact_outcomes: int = 4096,
    seed: int = 0,
) -> float:
    K = len(model.classes_)
    rem = [w for w in dict.fromkeys(remaining) if w not in votes or votes[w] is None]
    if K == 0 or not rem:
        return 0.0
    cidx = model._cidx
    asked = [(w, cidx[lab]) for w, lab in votes.items() if lab is not None and lab in cidx]
    cur = model.posterior(votes) if asked else model.priors_.copy()
    d = int(np.argmax(cur))
    fam_of = model._family_of
    n_fam: dict = {}
    for w in [w for w, _ in asked] + rem:
        f = fam_of(w)
        n_fam[f] = n_fam.get(f, 0) + 1
    rho = model.family_rho

    def weight(w) -> float:
        return 1.0 / (1.0 + rho * (n_fam[fam_of(w)] - 1)) if rho else 1.0

    base = model._log_pi.copy()
    for w, k in asked:
        base += weight(w) * _ref_log_rows(model, w)[:, k]
    logs = [_ref_log_rows(model, w) for w in rem]
    wts = np.array([weight(w) for w in rem])

    def gain_of(final: np.ndarray) -> np.ndarray:
        final = final - final.max(axis=-1, keepdims=True)
        q = np.exp(final)
        q /= q.sum(axis=-1, keepdims=True)
        return q.max(axis=-1) - q[..., d]

    if K ** len(rem) <= exact_outcomes:
        labels = np.array(list(itertools.product(range(K), repeat=len(rem))), dtype=np.int64)
        like = np.zeros((len(labels), K))
        final = np.broadcast_to(base, (len(labels), K)).copy()
        for r, (lt, w) in enumerate(zip(logs, wts, strict=True)):
            cols = lt[:, labels[:, r]].T
            like += cols
            final += w * cols
        prob = np.exp(like) @ cur
        return float(np.dot(prob, gain_of(final)))
    key = repr((seed, sorted((str(w), str(lab)) for w, lab in votes.items()), [str(w) for w in rem]))
    rng = np.random.default_rng(int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big"))
    likely = np.nonzero(cur > 1e-6)[0]
    final = np.broadcast_to(base, (len(likely), samples, K)).copy()
    for lt, w in zip(logs, wts, strict=True):
        cdf = np.cumsum(np.exp(lt[likely]), axis=1)
        u = rng.random((len(likely), samples, 1)) * cdf[:, None, -1:]
        lab = np.minimum((u > cdf[:, None, :]).sum(axis=2), K - 1)
        final += w * lt.T[lab]
    return float(np.dot(cur[likely], gain_of(final).mean(axis=1)) + cur[cur <= 1e-6].sum())


class RefPolicy(AdaptivePolicy):
    """:class:`AdaptivePolicy` with the unoptimised ``value``/``ranked``/``plan``/``gain``/``unsettled``."""

    def value(self, models, attributes):
        ms = [m for m in (models.get(a) for a in attributes) if m is not None and m.classes_]
        out = {}
        for n in self.order:
            c = 1.0 if self.cost == "calls" else max(self.prices[n], 1e-12)
            out[n] = sum(ref_informativeness(m, n) for m in ms) / c
        return out

    def ranked(self, models, attributes):
        v = self.value(models, attributes)
        return self._diversified(sorted(self.order, key=lambda n: (-round(v[n], 9), self.prices[n], n)))

    def plan(self, product_id, models=None, attributes=None):
        if not self.order:
            return []
        if self.explore(product_id):
            return [list(self.order)]
        if models is None or self._explicit is not None:
            return [list(s) for s in self.stages]
        return self._staged(self.ranked(models, list(attributes or ())))

    def gain(self, model, votes, asked=()):
        remaining = [n for n in self.order if n not in votes and n not in asked]
        return ref_expected_gain(model, votes, remaining, samples=self.samples, exact_outcomes=self.exact_outcomes,
                                 seed=self.seed)

    def unsettled(self, models, votes, attributes=None, *, asked=()):
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


# ---------------------------------------------------------------------- workload

LLMS = {  # name: (accuracy, price per 1k in + out), as sim_default.yaml
    "sim-large": (0.90, 0.0125), "sim-careful": (0.85, 0.018), "sim-flash": (0.78, 0.0028),
    "sim-small": (0.70, 0.0003), "sim-tiny": (0.60, 0.00015),
}


def endpoints() -> list[EndpointConfig]:
    return [EndpointConfig(name=n, base_url="http://127.0.0.1:1/v1", model=n, family=n, price_in_per_1k=p,
                           price_out_per_1k=0.0) for n, (_, p) in LLMS.items()]


def learn(m: OnlineDawidSkene, n: int, rng: np.random.Generator) -> None:
    """One mini-batch of ``n`` items labelled by every LLM (uniform errors)."""
    K = len(m.classes_)
    z = rng.integers(K, size=n)
    it, wk, lb = [], [], []
    for i in range(n):
        for w, (acc, _) in LLMS.items():
            k = z[i] if rng.random() < acc else (z[i] + 1 + rng.integers(K - 1)) % K
            it.append(i)
            wk.append(w)
            lb.append(m.classes_[k])
    m.partial_fit(it, wk, lb)


def warm_model(K: int, n: int, rng: np.random.Generator) -> OnlineDawidSkene:
    m = default_online([f"c{k}" for k in range(K)])
    for s in range(0, n, 50):  # mini-batches, as the stream's learner applies them
        learn(m, min(50, n - s), rng)
    return m


def workload(products: int, train: int, update_every: int, seed: int):
    """Model snapshots (serialised; the models keep learning: a new version every ``update_every`` products)
    and every product's answers (attribute -> LLM -> label, 2% abstentions)."""
    rng = np.random.default_rng(seed)
    live = {"attr4": warm_model(4, train, rng), "attr13": warm_model(13, train, rng)}
    snapshots = []
    for _ in range(0, products, update_every):
        snapshots.append({a: m.to_bytes() for a, m in live.items()})
        for m in live.values():
            learn(m, 20, rng)
    answers = {}
    for i in range(products):
        pid = f"product-{i}"
        answers[pid] = {}
        for a, m in live.items():
            K = len(m.classes_)
            z = rng.integers(K)
            answers[pid][a] = {}
            for w, (acc, _) in LLMS.items():
                k = z if rng.random() < acc else (z + 1 + rng.integers(K - 1)) % K
                answers[pid][a][w] = None if rng.random() < 0.02 else m.classes_[k]
    return snapshots, answers


def run(policy: AdaptivePolicy, snapshots, answers, update_every: int) -> tuple[int, list]:
    """Every product stage by stage as the stream does; returns (stages run, trace of plans and unsettled)."""
    stages, trace = 0, []
    attrs = list(next(iter(answers.values())))
    for i, (pid, ans) in enumerate(answers.items()):
        models = snapshots[i // update_every]
        by: dict[str, dict] = {a: {} for a in attrs}
        asked: list[str] = []
        todo = list(attrs)
        plan = policy.plan(pid, models, attrs)
        trace.append(plan)
        explore = policy.explore(pid)
        for stage in plan:
            stages += 1
            for a in todo:
                for w in stage:
                    by[a][w] = ans[a][w]
            asked += stage
            if explore:
                continue
            todo = policy.unsettled(models, by, todo, asked=asked)
            trace.append(todo)
            if not todo:
                break
    return stages, trace


def timed(make_policy, snapshots, answers, update_every: int, repeat: int) -> tuple[float, int, list]:
    """Best of ``repeat`` runs, each with a new policy and fresh model objects (cold caches, as after a restart)."""
    best, stages, trace = float("inf"), 0, []
    for _ in range(repeat):
        policy = make_policy()
        models = [{a: OnlineDawidSkene.from_bytes(b) for a, b in snap.items()} for snap in snapshots]
        t0 = time.process_time()
        stages, trace = run(policy, models, answers, update_every)
        best = min(best, time.process_time() - t0)
    return best, stages, trace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--products", type=int, default=300)
    ap.add_argument("--train", type=int, default=500, help="items each warm model has learnt from")
    ap.add_argument("--update-every", type=int, default=32,
                    help="products per model version (the stream's learner applies a delta per chunk)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    snapshots, answers = workload(args.products, args.train, args.update_every, args.seed)
    eps = endpoints()
    ref_s, ref_stages, ref_trace = timed(lambda: RefPolicy(eps), snapshots, answers, args.update_every,
                                         max(1, args.repeat // 2))
    cur_s, cur_stages, cur_trace = timed(lambda: AdaptivePolicy(eps), snapshots, answers, args.update_every,
                                         args.repeat)
    if cur_trace != ref_trace:
        sys.exit("the current policy's plans/unsettled differ from the reference's")
    per = ref_stages
    print(f"{args.products} products, {per} stages ({per / args.products:.2f} per product), 2 attributes "
          f"(K = 4, 13), {len(LLMS)} LLMs, a new model version every {args.update_every} products; "
          "decisions identical to the reference")
    print(f"reference: {1e3 * ref_s / per:.3f} ms per product per stage")
    print(f"current  : {1e3 * cur_s / cur_stages:.3f} ms per product per stage")
    print(f"adaptive_policy_speedup={ref_s / cur_s:.1f}")


if __name__ == "__main__":
    main()
