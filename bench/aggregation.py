"""Aggregation benchmark: a leave-one-dataset-out accuracy table over every dataset the team has, then speed.

Datasets: the five shared crowd sets, every recorded GPT attribute in ``../shared/data/llm_predictions``, every
attribute of the real local LLMs' votes shipped in ``llmens_core/data`` (``real:``, issue 13), and synthetic
worlds generated here (a panel of three base models x three correlated runs plus one strong independent model;
a dense asymmetric panel; a sparse crowd; a sparse binary crowd with a rare positive class; the simulated
panel's votes with every product repeated). Columns: ``default`` (batch), ``online`` (one shuffled pass),
``mv`` (ties to the first label in order), ``mv~`` (its ties split evenly: the expected accuracy of random
tie-breaks, which no naming of the labels changes), textbook ``ds``, crowd-kit DS (``ck-ds``, when installed),
our ``1coin`` (IWMV), the best single worker in hindsight (``best1``: among workers answering at least half of
the gold items) and, on synthetic worlds, the Bayes ``oracle`` with the true parameters.

Protocol: the default uses no gold at all (its choices are made per dataset by held-out votes). The one
design constant chosen on data, the online model's revisit ``window``, is chosen here per dataset by a gold-free
criterion (agreement of one online pass with the batch decisions) on the *other* datasets only, and the
evaluated dataset's online column uses that choice. Each row below the bar is then compared with majority vote
item by item (an exact sign test on the items only one of them decides right): on a few dozen gold items one
item is several points, and the bar alone cannot tell a loss from chance. Then small samples: 256 random items
of each larger crowd set, five draws, default vs mv and ds (nothing is chosen there). Then width against
length: the default's fit time on a generated wide crowd (333 items x 825 workers) and on as many answers from
5 workers, in the same run (``--width-only`` runs just that). The last line is
``ds_speedup_vs_crowdkit=<crowd-kit seconds / ours>`` on 1,000,000 synthetic answers.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "core" / "aggregation"))  # agg_synth: worlds the tests use too

from llmens_core.aggregation import (  # noqa: E402
    METHODS,
    DawidSkene,
    OnlineDawidSkene,
    default_aggregator,
)
from llmens_core.aggregation.evaluate import (  # noqa: E402
    _score,
    majority_tie_split,
    read_answers,
    read_truth,
    run_online,
    sign_test,
)
from llmens_core.aggregation.online import YOUNG_ITEMS  # noqa: E402

CROWD_SETS = ("bluebird", "rte", "dog", "web", "sentiment")
WINDOW_CHOICES = (0, 4, 8, 16)


def table(title: str, header: list[str], rows: list[list]) -> None:
    print(title)
    print("  ".join(f"{h:>12}" for h in header))
    for r in rows:
        print("  ".join(f"{x:>12.4f}" if isinstance(x, float) else f"{x!s:>12}" for x in r))


def _long(cols: dict[str, np.ndarray]):
    n = len(next(iter(cols.values())))
    items = np.concatenate([np.arange(n)] * len(cols)).astype(str)
    workers = np.concatenate([[w] * n for w in cols])
    return items.tolist(), workers.tolist(), np.concatenate(list(cols.values())).astype(str).tolist()


def families_world(seed: int = 0, n: int = 2000, K: int = 4):
    """3 base models x 3 runs (a run repeats its model's answer with probability 0.6, else answers on its own:
    within-family error correlation ~0.6), accuracies 0.65-0.75, plus one strong independent model (0.85)."""
    rng = np.random.default_rng(seed)
    z = rng.integers(0, K, n)

    def answer(acc):
        return np.where(rng.random(n) < acc, z, (z + rng.integers(1, K, n)) % K)

    cols, accs = {}, {}
    for f, acc in enumerate((0.65, 0.7, 0.75)):
        shared = answer(acc)
        for r in range(3):
            cols[f"m{f}.run{r}"] = np.where(rng.random(n) < 0.6, shared, answer(acc))
        accs[f] = acc
    cols["strong"] = answer(0.85)
    # oracle: exact posterior of this generative model (sum over each family's shared answer)
    logp = np.zeros((n, K))
    for y in range(K):
        for f, acc in accs.items():
            p_ans = np.full(K, (1 - acc) / (K - 1))
            p_ans[y] = acc
            fam = np.zeros(n)
            for a in range(K):
                term = np.full(n, p_ans[a])
                for r in range(3):
                    lab = cols[f"m{f}.run{r}"]
                    term *= 0.6 * (lab == a) + 0.4 * np.where(lab == y, acc, (1 - acc) / (K - 1))
                fam += term
            logp[:, y] += np.log(fam)
        logp[:, y] += np.log(np.where(cols["strong"] == y, 0.85, 0.15 / (K - 1)))
    oracle = float((logp.argmax(1) == z).mean())
    return (*_long(cols), {str(i): str(t) for i, t in enumerate(z)}, oracle)


def ds_world(seed: int, n: int, J: int, K: int, p_vote: float, acc=(0.55, 0.9)):
    """Textbook Dawid-Skene world: asymmetric confusions, each worker answers an item with ``p_vote``."""
    rng = np.random.default_rng(seed)
    conf = np.empty((J, K, K))
    for j in range(J):
        for k in range(K):
            a = rng.uniform(*acc)
            conf[j, k] = np.insert(rng.dirichlet(np.ones(K - 1)) * (1 - a), k, a)
    z = rng.integers(0, K, n)
    items, workers, labels = [], [], []
    logp = np.zeros((n, K))
    for j in range(J):
        idx = np.flatnonzero(rng.random(n) < p_vote)
        lab = np.minimum((rng.random(len(idx))[:, None] > np.cumsum(conf[j][z[idx]], axis=1)).sum(1), K - 1)
        items += idx.astype(str).tolist()
        workers += [f"w{j}"] * len(idx)
        labels += lab.astype(str).tolist()
        logp[idx] += np.log(conf[j][:, lab].T)
    oracle = float((logp.argmax(1) == z).mean())
    return items, workers, labels, {str(i): str(t) for i, t in enumerate(z)}, oracle


def real_llm_datasets():
    """``real:<attribute>`` from the shipped votes of the real local LLMs (issue 13's recording) on the OA-Mine
    demo products, gold from ``demo_products.jsonl`` (an absent attribute value is ``none``)."""
    from llmens_core.scoring import real_llm_votes

    for a, ((items, workers, labels), truth) in real_llm_votes().items():
        yield (f"real:{a}", items, workers, labels, truth, None)


def datasets(crowd_dir: Path, llm_dir: Path):
    """(name, items, workers, labels, truth, oracle or None) for every dataset available."""
    for name in CROWD_SETS:
        d = crowd_dir / name
        if d.is_dir():
            yield (name, *read_answers(d / "answers.csv"), read_truth(d / "truth.csv"), None)
    if llm_dir.is_dir():
        for d in sorted(p for p in llm_dir.iterdir() if (p / "answers.csv").exists()):
            yield (f"gpt:{d.name}", *read_answers(d / "answers.csv"), read_truth(d / "truth.csv"), None)
    yield from real_llm_datasets()
    yield ("syn:families", *families_world())
    yield ("syn:panel", *ds_world(1, 2000, 6, 4, 1.0))
    yield ("syn:crowd", *ds_world(2, 3000, 60, 3, 0.06, acc=(0.5, 0.9)))
    yield ("syn:rare", *rare_positive_world())
    yield ("syn:graded", *graded_world())
    yield ("syn:graded-skew", *graded_world(n_items=3000, n_workers=300, votes_per_item=5, hard=0.4,
                                            prior=(0.6, 0.2, 0.12, 0.08)))
    yield ("sim:copies", *copies_world())


def copies_world(attribute: str = "material", copies: int = 25):
    """The simulated panel's votes (the stream tests' five LLMs) on the demo products asking ``attribute``, every
    product ``copies`` times, as the stream's kill test publishes them and as a catalogue re-listing products
    gives them (``agg_synth.simulated_panel_votes``; the tests use ``gender``)."""
    from agg_synth import simulated_panel_votes

    items, workers, labels, gold = simulated_panel_votes(attribute)
    ids = [f"{i}~{c}" for c in range(copies) for i in items.tolist()]
    truth = {f"{i}~{c}": g for c in range(copies) for i, g in gold.items()}
    return ids, workers.tolist() * copies, labels.tolist() * copies, truth, None


def rare_positive_world(seed: int = 3):
    """A sparse binary crowd with 12 % positives (``agg_synth.imbalanced_crowd``, the world of the tests; seed 3
    is not one the tests use): 3,000 items, three votes each from 120 workers of heavy-tailed activity."""
    from agg_synth import imbalanced_crowd

    items, workers, labels, z, log_joint = imbalanced_crowd(np.random.default_rng(seed))
    return (*_named(items, workers, labels, z), float((log_joint.argmax(1) == z).mean()))


def graded_world(seed: int = 3, **world):
    """A sparse crowd on ordered grades where many items are hard (their votes spread around the true grade;
    ``agg_synth.graded_crowd_with_hard_items``, the world of the tests; seed 3 is not one they use). Default: 600
    items, five balanced grades, 60 % hard, six votes each from 150 workers of heavy-tailed activity;
    ``syn:graded-skew`` is an adult-content-rating shape (four grades, 60 % in the first, 40 % hard)."""
    from agg_synth import graded_crowd_with_hard_items

    return (*_named(*graded_crowd_with_hard_items(np.random.default_rng(seed), **world)), None)


def _named(items: np.ndarray, workers: np.ndarray, labels: np.ndarray, z: np.ndarray) -> tuple:
    """A generated world's integer votes (V,) and truth (I,) as the table's ``(items, workers, labels, truth)``."""
    return (items.astype(str).tolist(), [f"w{w}" for w in workers], labels.astype(str).tolist(),
            {str(i): str(t) for i, t in enumerate(z)})


def best_single(items, workers, labels, truth) -> float | None:
    """Accuracy of the best worker in hindsight among those answering at least half of the gold items."""
    got: dict = {}
    for i, w, lab in zip(items, workers, labels, strict=True):
        if i in truth:
            got.setdefault(w, {})[i] = lab
    ok = [np.mean([v.get(i) == t for i, t in truth.items()]) for v in got.values() if len(v) >= len(truth) / 2]
    return float(max(ok)) if ok else None


def _crowdkit_ds(items, workers, labels, truth) -> float | None:
    try:
        import pandas as pd
        from crowdkit.aggregation import DawidSkene as CKDS
    except ImportError:
        return None
    keep = [k for k, lab in enumerate(labels) if lab is not None]
    df = pd.DataFrame({"task": [items[k] for k in keep], "worker": [workers[k] for k in keep],
                       "label": [labels[k] for k in keep]})
    pred = CKDS(n_iter=100).fit_predict(df)
    return float(np.mean([str(pred[i]) == t for i, t in truth.items() if i in pred.index]))


def score_dataset(items, workers, labels, truth, oracle) -> dict:
    """Every column of the table for one dataset (online for each window choice, with its agreement with
    the batch decisions: the gold-free criterion of the LODO choice)."""
    row: dict = {"n": sum(1 for i in set(items) if i in truth), "oracle": oracle}
    batch = default_aggregator()
    pred = batch.fit_predict(items, workers, labels)
    row["default"] = _score(batch.items_.tolist(), pred.tolist(), truth)[0]
    row["chosen"] = batch.choice_
    decided = dict(zip(batch.items_.tolist(), pred.tolist(), strict=True))
    for name in ("mv", "ds", "onecoin"):
        est = METHODS[name]()
        p = est.fit_predict(items, workers, labels)
        row[name] = _score(est.items_.tolist(), p.tolist(), truth)[0]
        if name == "mv":
            right = {i: (decided[i] == truth[i], lab == truth[i]) for i, lab in zip(est.items_.tolist(), p.tolist(),
                                                                                    strict=True) if i in truth}
            row["vs_mv"] = (sum(d and not m for d, m in right.values()), sum(m and not d for d, m in right.values()))
            row["mv~"] = majority_tie_split(est, truth)
    row["ck-ds"] = _crowdkit_ds(items, workers, labels, truth)
    row["best1"] = best_single(items, workers, labels, truth)
    row["online"], row["agree"] = {}, {}
    for window in WINDOW_CHOICES:
        model, its, proba = run_online(items, workers, labels, window=window)
        op = [model.classes_[k] for k in proba.argmax(1)]
        row["online"][window] = _score(its.tolist(), op, truth)[0]
        row["agree"][window] = float(np.mean([decided[i] == p for i, p in zip(its.tolist(), op, strict=True)]))
    return row


def _pct(x) -> str:
    return "  n/a" if x is None else f"{100 * x:5.1f}"


def lodo_table(rows: dict[str, dict]) -> None:
    """Print the table; the online column uses the window chosen on the other datasets."""
    print("Leave-one-dataset-out accuracy (%); online: window chosen on the other datasets by agreement")
    print("with the batch decisions (no gold). ok: default >= max(mv, ds) - 0.5.")
    head = (f"{'dataset':<17}{'n':>5} {'default':>7} {'online':>6} {'mv':>5} {'mv~':>5} {'ds':>5} {'ck-ds':>5} "
            f"{'1coin':>5} {'best1':>5} {'oracle':>6}  ok")
    print(head)
    gaps, checks, llm_mv, llm_best, llm_n = {}, 0, 0, 0, 0
    for name, r in rows.items():
        others = [o for o in rows if o != name]
        window = max(WINDOW_CHOICES, key=lambda k: (np.mean([rows[o]["agree"][k] for o in others]), -k))
        r["window"], online = window, r["online"][window]
        ok = r["default"] >= max(r["mv"], r["ds"]) - 0.005
        checks += ok
        gaps[name] = online - r["default"]
        if name.startswith(("gpt:", "real:")) and r["n"] >= 50:
            llm_n += 1
            llm_mv += r["default"] > r["mv"]
            llm_best += r["best1"] is not None and r["default"] >= r["best1"]
        print(f"{name:<17}{r['n']:>5} {_pct(r['default']):>7} {_pct(online):>6} {_pct(r['mv'])} {_pct(r['mv~'])} "
              f"{_pct(r['ds'])} {_pct(r['ck-ds'])} {_pct(r['onecoin'])} {_pct(r['best1'])} {_pct(r['oracle']):>6}  "
              f"{'yes' if ok else 'NO'}")
    print("\nchosen by held-out votes / online window (LODO):")
    for name, r in rows.items():
        print(f"  {name:<17} {r['chosen']:<28} window={r['window']}")
    print(f"\ndefault >= max(mv, ds) - 0.5 on {checks}/{len(rows)} datasets; above both on "
          f"{sum(r['default'] > max(r['mv'], r['ds']) for r in rows.values())}/{len(rows)}")
    print(f"recorded LLM attributes (gpt:, real:) with >= 50 gold items: default > mv on {llm_mv}/{llm_n}, >= best single on "
          f"{llm_best}/{llm_n}")
    print("\nRows below the bar against majority vote, item by item: wins / losses = items only the default / only"
          "\nmajority vote decides right, p = exact sign test; mv~ = majority vote with its ties split evenly.")
    for name, r in rows.items():
        if r["default"] < max(r["mv"], r["ds"]) - 0.005:
            wins, losses = r["vs_mv"]
            print(f"  {name:<17} default {_pct(r['default']).strip()}, mv {_pct(r['mv']).strip()}, "
                  f"mv~ {_pct(r['mv~']).strip()}: {wins} wins / {losses} losses, p = {sign_test(wins, losses):.3f}")
    worse = [n for n, r in rows.items() if r["vs_mv"][1] > r["vs_mv"][0] and sign_test(*r["vs_mv"]) < 0.05]
    print(f"rows where default is below majority vote by a sign test at 0.05: {len(worse)}/{len(rows)}"
          + (f" ({', '.join(worse)})" if worse else ""))
    worst = max(gaps, key=lambda k: abs(gaps[k]))
    print(f"online - batch (points): max |gap| {100 * max(abs(g) for g in gaps.values()):.2f} ({worst}); "
          + ", ".join(f"{k} {100 * g:+.1f}" for k, g in gaps.items()))


SUBSAMPLE_ITEMS, SUBSAMPLE_SEEDS = 256, 5


def subsample_table(crowd_dir: Path) -> None:
    """Small samples of the larger crowd sets: ``SUBSAMPLE_SEEDS`` random draws of ``SUBSAMPLE_ITEMS`` items
    (one stream flush; the size of a new attribute's first weeks), default vs majority vote and textbook DS on
    each. The full-data table hides how the criterion behaves when it has little data."""
    print(f"\nSmall samples ({SUBSAMPLE_ITEMS} random items, seeds 0-{SUBSAMPLE_SEEDS - 1}): default / mv / ds "
          "accuracy (%) and the default's choice")
    below = total = 0
    for name in CROWD_SETS:
        d = crowd_dir / name
        if not d.is_dir():
            continue
        items, workers, labels = (np.asarray(x, dtype=object) for x in read_answers(d / "answers.csv"))
        truth = read_truth(d / "truth.csv")
        uniq = np.unique(items.astype(str))
        if len(uniq) < 2 * SUBSAMPLE_ITEMS:
            continue
        cells = []
        for seed in range(SUBSAMPLE_SEEDS):
            pick = np.random.default_rng(seed).permutation(len(uniq))[:SUBSAMPLE_ITEMS]
            sel = np.isin(items.astype(str), uniq[pick])
            acc, fitted = {}, {}
            for method in ("default", "mv", "ds"):
                fitted[method] = est = METHODS[method]()
                p = est.fit_predict(items[sel], workers[sel], labels[sel])
                acc[method] = _score(est.items_.tolist(), p.tolist(), truth)[0]
            bad = acc["default"] < max(acc["mv"], acc["ds"]) - 0.005
            below, total = below + bad, total + 1
            cells.append(f"{_pct(acc['default']).strip()}/{_pct(acc['mv']).strip()}/{_pct(acc['ds']).strip()}"
                         f" {fitted['default'].choice_}{' NO' if bad else ''}")
        print(f"  {name:<10} " + "; ".join(cells))
    print(f"small samples where default < max(mv, ds) - 0.5: {below}/{total}")


def synthetic(n_items: int = 200_000, n_workers: int = 5, n_classes: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    K = n_classes
    pi = rng.dirichlet(np.full(K, 5.0))
    conf = np.empty((n_workers, K, K))
    for j in range(n_workers):
        acc = rng.uniform(0.55, 0.85)
        for k in range(K):
            off = rng.dirichlet(np.ones(K - 1)) * (1 - acc)
            conf[j, k] = np.insert(off, k, acc)
    z = rng.choice(K, size=n_items, p=pi)
    u = rng.random((n_items, n_workers))
    cum = np.cumsum(conf[:, z, :].transpose(1, 0, 2), axis=2)  # (I, J, K)
    lab = (u[..., None] > cum).sum(axis=2)
    lab = np.minimum(lab, K - 1)
    items = np.repeat(np.arange(n_items), n_workers)
    workers = np.tile(np.arange(n_workers), n_items)
    labels = lab.ravel()
    # Bayes oracle from the true parameters
    logp = np.log(pi)[None, :] + np.log(conf[np.arange(n_workers)[None, :], :, lab]).sum(axis=1)
    oracle = float((logp.argmax(1) == z).mean())
    return items, workers, labels, z, conf, oracle


def speed(skip_ck: bool) -> float | None:
    items, workers, labels, z, conf, oracle = synthetic()
    t0 = time.perf_counter()
    ours = DawidSkene(prior_strength=0.0, class_prior_strength=0.0, tol=1e-7)
    pred = ours.fit_predict(items, workers, labels)
    t_ours = time.perf_counter() - t0
    acc_ours = float((np.asarray(pred, dtype=np.int64) == z).mean())
    err = float(np.abs(ours.confusion_ - conf).max())
    t0 = time.perf_counter()
    dflt = default_aggregator()
    acc_def = float((np.asarray(dflt.fit_predict(items, workers, labels), dtype=np.int64) == z).mean())
    t_def = time.perf_counter() - t0
    # the same without the pattern compression (plain vectorised EM over 1,000,000 votes)
    t0 = time.perf_counter()
    raw = DawidSkene(prior_strength=0.0, class_prior_strength=0.0, tol=1e-7, compress=False)
    acc_raw = float((np.asarray(raw.fit_predict(items, workers, labels), dtype=np.int64) == z).mean())
    t_raw = time.perf_counter() - t0
    rows = [
        ["ours DS (ML)", f"{t_ours:.3f}", ours.n_iter_, acc_ours, f"{err:.4f}"],
        ["ours DS, no pattern compression", f"{t_raw:.3f}", raw.n_iter_, acc_raw, ""],
        ["ours default", f"{t_def:.3f}", dflt.n_iter_, acc_def, ""],
    ]
    t_ck = None
    if not skip_ck:
        import pandas as pd
        from crowdkit.aggregation import DawidSkene as CKDS

        df = pd.DataFrame({"task": items, "worker": workers, "label": labels})
        t0 = time.perf_counter()
        ck = CKDS(n_iter=100)
        ck_pred = ck.fit_predict(df)
        t_ck = time.perf_counter() - t0
        acc_ck = float((ck_pred.sort_index().to_numpy().astype(np.int64) == z).mean())
        rows.append(["crowd-kit DawidSkene", f"{t_ck:.3f}", getattr(ck, "n_iter", ""), acc_ck, ""])
    table(
        f"Synthetic 200,000 items x 5 workers x 4 classes (seed 0): Bayes-oracle accuracy {oracle:.4f}",
        ["method", "fit s", "iterations", "accuracy", "max |confusion - true|"],
        rows,
    )
    # online partial_fit cost: a cold model's first batch is the batch race (once per model), timed apart
    n_items = 51_200
    b = 256
    sel_items, sel_workers, sel_labels = items[: n_items * 5], workers[: n_items * 5], labels[: n_items * 5]
    names_w = np.array([f"llm{j}" for j in range(5)], dtype=object)[sel_workers]
    names_l = np.array([f"c{k}" for k in range(4)], dtype=object)[sel_labels]

    def online_pass(model):
        """Seconds of the first batch (the race), seconds of the young phase's other batches (races again as its
        items grow, up to YOUNG_ITEMS), and seconds per item after it."""
        t0 = time.perf_counter()
        model.partial_fit(sel_items[: b * 5], names_w[: b * 5], names_l[: b * 5])
        t1 = time.perf_counter()
        young_end = b * (YOUNG_ITEMS // b + 1)
        for s in range(b, n_items, b):
            if s == young_end:
                t2 = time.perf_counter()
            sl = slice(s * 5, (s + b) * 5)
            model.partial_fit(sel_items[sl], names_w[sl], names_l[sl])
        return t1 - t0, t2 - t1, (time.perf_counter() - t2) / (n_items - young_end)

    m = OnlineDawidSkene()
    t_first, t_young, t_pf = online_pass(m)
    votes = {f"llm{j}": f"c{k}" for j, k in enumerate([0, 1, 0, 2, 0])}
    t0 = time.perf_counter()
    for _ in range(20000):
        m.posterior(votes)
    t_post = (time.perf_counter() - t0) / 20000
    _, _, t_pf1 = online_pass(OnlineDawidSkene(window=0))
    print(
        f"online partial_fit: {1e6 * t_pf:.2f} us/item once the model is no longer young (> {YOUNG_ITEMS} items; "
        f"batches of {b}, 5 workers, 4 classes, window={m.window}); {1e6 * t_pf1:.2f} us/item without the window; "
        f"first batch of a cold model (the batch race): {t_first:.2f} s; the young model's other batches (raced "
        f"again as its items grow): {t_young:.2f} s; posterior(): {1e6 * t_post:.2f} us/item"
    )
    return None if t_ck is None else t_ck / t_ours


def width_vs_length(seed: int = 0) -> tuple[float, float]:
    """The default's fit time on a wide crowd (333 items, 825 workers, about 92,000 answers, 4 labels, a public crowd
    set's shape) and on the same number of answers from 5 workers (18,450 items), generated by :func:`ds_world` in
    this run; a model whose cost grew with the workers squared per round would be far slower on the first."""
    shapes = {"wide crowd (333 items x 825 workers)": (333, 825, 92_000 / (333 * 825)),
              "long panel (18,450 items x 5 workers)": (18_450, 5, 1.0)}
    seconds = []
    for name, (n, J, p_vote) in shapes.items():
        items, workers, labels, truth, _ = ds_world(seed, n, J, 4, p_vote)
        t0 = time.perf_counter()
        model = default_aggregator().fit(items, workers, labels)
        seconds.append(time.perf_counter() - t0)
        acc = _score(model.items_.tolist(), model.predict().tolist(), truth)[0]
        print(f"default fit, {name}: {len(items):,} answers, {seconds[-1]:.1f} s, {model.choice_}, "
              f"accuracy {100 * acc:.1f} %")
    print(f"width costs {seconds[0] / seconds[1]:.1f} x length (the default's fit time, wide over long)")
    return seconds[0], seconds[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crowd", type=Path, default=REPO / ".." / "shared" / "data" / "crowd")
    ap.add_argument("--llm", type=Path,
                    default=REPO / ".." / "shared" / "data" / "llm_predictions" / "by_attribute")
    ap.add_argument("--skip-crowdkit", action="store_true", help="no crowd-kit timing (speedup line prints n/a)")
    ap.add_argument("--skip-table", action="store_true", help="speed figures only")
    ap.add_argument("--width-only", action="store_true", help="only the default's fit time, wide crowd vs long panel")
    args = ap.parse_args()
    if args.width_only:
        wide, long = width_vs_length()
        print(f"width_vs_length={wide / long:.1f}")
        return
    if not args.crowd.is_dir():
        print(f"crowd datasets not found at {args.crowd.resolve()}: only the synthetic worlds are scored")
    if not args.skip_crowdkit:
        try:
            import crowdkit  # noqa: F401
        except ImportError:
            sys.exit("crowd-kit is not installed: pip install -e '.[bench]' (or pass --skip-crowdkit)")
    if not args.skip_table:
        rows = {}
        for name, items, workers, labels, truth, oracle in datasets(args.crowd, args.llm):
            t0 = time.perf_counter()
            rows[name] = score_dataset(items, workers, labels, truth, oracle)
            print(f"  scored {name} in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        lodo_table(rows)
        if args.crowd.is_dir():
            subsample_table(args.crowd)
    width_vs_length()
    ratio = speed(args.skip_crowdkit)
    print(f"ds_speedup_vs_crowdkit={ratio:.1f}" if ratio is not None else "ds_speedup_vs_crowdkit=n/a")


if __name__ == "__main__":
    main()
