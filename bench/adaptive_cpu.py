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
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from llmens_core.adaptive import AdaptivePolicy  # noqa: E402
from llmens_core.aggregation import OnlineDawidSkene, default_online  # noqa: E402
from llmens_core.llm.config import EndpointConfig  # noqa: E402
from tests.core.adaptive_reference import RefPolicy  # noqa: E402  (the unoptimised implementation)

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
