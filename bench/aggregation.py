"""Aggregation benchmark: ours vs crowd-kit (accuracy on the shared crowd sets, DS fit time on a synthetic set),
online partial_fit cost, and the LLM-prediction comparison (default vs majority vote vs best single run).

crowd-kit is imported only here (``pip install -e '.[bench]'``). The last line is
``ds_speedup_vs_crowdkit=<crowd-kit seconds / ours>``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from llmens_core.aggregation import (  # noqa: E402
    METHODS,
    DawidSkene,
    MajorityVote,
    OneCoinDawidSkene,
    OnlineDawidSkene,
    default_aggregator,
)
from llmens_core.aggregation.evaluate import _score, read_answers, read_truth, run_online  # noqa: E402

CROWD_SETS = ("bluebird", "rte", "dog", "web", "sentiment")


def table(title: str, header: list[str], rows: list[list]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table

        t = Table(title=title)
        for h in header:
            t.add_column(h)
        for r in rows:
            t.add_row(*[f"{x:.4f}" if isinstance(x, float) else str(x) for x in r])
        Console(width=160).print(t)
    except ImportError:  # pragma: no cover
        print(title)
        print("\t".join(header))
        for r in rows:
            print("\t".join(f"{x:.4f}" if isinstance(x, float) else str(x) for x in r))


def ck_accuracy(model, df, truth) -> float:
    pred = model.fit_predict(df)
    ok = [str(pred[i]) == lab for i, lab in truth.items() if i in pred.index]
    return float(np.mean(ok))


def crowd(crowd_dir: Path) -> None:
    import pandas as pd
    from crowdkit.aggregation import DawidSkene as CKDS
    from crowdkit.aggregation import OneCoinDawidSkene as CKOC

    rows = []
    for name in CROWD_SETS:
        d = crowd_dir / name
        items, workers, labels = read_answers(d / "answers.csv")
        truth = read_truth(d / "truth.csv")
        df = pd.DataFrame({"task": items, "worker": workers, "label": labels})
        ck_ds = ck_accuracy(CKDS(n_iter=100), df, truth)
        ck_oc = ck_accuracy(CKOC(n_iter=100), df, truth)
        ours = {}
        for m in ("default", "ds", "onecoin", "mv"):
            est = METHODS[m]()
            pred = est.fit_predict(items, workers, labels)
            ours[m] = _score(est.items_.tolist(), pred.tolist(), truth)[0]
        model, it_, p = run_online(items, workers, labels, seed=0, batch_size=256)
        ours["online"] = _score(it_.tolist(), [model.classes_[k] for k in p.argmax(1)], truth)[0]
        rows.append(
            [
                name,
                ck_ds,
                ck_oc,
                ours["default"],
                ours["online"],
                ours["ds"],
                ours["onecoin"],
                ours["mv"],
                f"{100 * (ours['default'] - ck_ds):+.2f}",
                f"{100 * (ours['online'] - ck_ds):+.2f}",
            ]
        )
    table(
        "Crowd datasets: accuracy (crowd-kit 1.4.2 default settings, n_iter=100)",
        [
            "dataset",
            "ck DS",
            "ck 1coin",
            "default",
            "online 1 pass",
            "ours DS (ML)",
            "ours IWMV",
            "MV",
            "default-ckDS pts",
            "online-ckDS pts",
        ],
        rows,
    )


def llm(llm_dir: Path) -> None:
    rows = []
    for d in sorted(p for p in llm_dir.iterdir() if (p / "answers.csv").exists()):
        items, workers, labels = read_answers(d / "answers.csv")
        truth = read_truth(d / "truth.csv")
        res = {}
        for name, est in (
            ("default", default_aggregator()),
            ("mv", MajorityVote()),
            ("ds", METHODS["ds"]()),
            ("onecoin", OneCoinDawidSkene()),
        ):
            pred = est.fit_predict(items, workers, labels)
            res[name] = _score(est.items_.tolist(), pred.tolist(), truth)[0]
        model, it_, p = run_online(items, workers, labels, families="auto")
        res["online"] = _score(it_.tolist(), [model.classes_[k] for k in p.argmax(1)], truth)[0]
        single = {}
        for w in sorted(set(workers)):
            got = {i: lab for i, ww, lab in zip(items, workers, labels, strict=False) if ww == w}
            single[w] = float(np.mean([got.get(i) == lab for i, lab in truth.items()]))
        best = max(single, key=single.get)
        rows.append(
            [
                d.name,
                len(truth),
                res["default"],
                res["online"],
                res["mv"],
                res["ds"],
                res["onecoin"],
                single[best],
                best,
            ]
        )
    table(
        "Recorded LLM predictions: default (families = base model before '|') vs majority vote vs best single run",
        [
            "attribute",
            "items",
            "default",
            "online",
            "MV",
            "DS (no families)",
            "IWMV",
            "best single",
            "best run",
        ],
        rows,
    )


def simulated_panel(products: Path) -> None:
    """5 simulated LLMs (the built-in simulator over real HTTP) on the shared products: a dense panel.

    This is the setting llmens runs in; it is where the crowd prior (uniform class prior) lets phantom
    classes win, and why the default switches to the panel prior on dense data.
    """
    import asyncio

    from llmens_core.aggregation import CROWD_CONFIG, DawidSkene
    from llmens_core.events import ProductUpdate
    from llmens_core.llm.gateway import Gateway
    from llmens_core.llm.simulator import endpoints_for, load_sim_config, start_simulator
    from llmens_core.schema import AttributeSchema

    recs = [orjson.loads(line) for line in products.read_bytes().splitlines()]
    recs = [r for r in recs if r["attributes"] and not r["source"].startswith("implicitave")]
    cfg = load_sim_config(None).model_dump(mode="json")
    cfg["products"] = str(products)
    cfg["defaults"] = {"latency_ms": {"mean": 0, "p99": 0}, "faults": {}}
    for m in cfg["models"]:
        m["latency_ms"], m["faults"] = None, None

    async def collect():
        runner, port = await start_simulator(cfg)
        eps = endpoints_for(load_sim_config(cfg), f"http://127.0.0.1:{port}/v1", max_concurrency=64)
        votes = []
        sem = asyncio.Semaphore(64)
        async with Gateway(eps, AttributeSchema.load()) as gw:
            async def one(r):
                async with sem:
                    p = ProductUpdate(product_id=r["product_id"], version=1, title=r["title"],
                                      description=r["description"], category=r["category"])
                    votes.extend(await gw.label(p, sorted(r["attributes"])))
            await asyncio.gather(*(one(r) for r in recs))
        await runner.cleanup()
        return votes

    votes = asyncio.run(collect())
    by_attr: dict = {}
    for v in votes:
        if v.label is not None:
            it, wk, lb = by_attr.setdefault(v.attribute, ([], [], []))
            it.append(v.product_id)
            wk.append(v.llm)
            lb.append(v.label)
    gold = {(r["product_id"], a): (g if g is not None else "none") for r in recs for a, g in r["attributes"].items()}
    rows = []
    for attr, (it, wk, lb) in sorted(by_attr.items()):
        truth = {pid: g for (pid, a), g in gold.items() if a == attr}
        res = {}
        for name, est in (("default", default_aggregator()), ("crowd prior", DawidSkene(**CROWD_CONFIG)),
                          ("mv", MajorityVote()), ("ds", METHODS["ds"]()), ("onecoin", OneCoinDawidSkene())):
            pred = est.fit_predict(it, wk, lb)
            res[name] = _score(est.items_.tolist(), pred.tolist(), truth)[0]
        rows.append([attr, len(truth), res["default"], res["crowd prior"], res["mv"], res["ds"], res["onecoin"]])
    table("Simulated LLM panel (5 built-in simulated models, shared products): default vs crowd prior",
          ["attribute", "items", "default (panel prior)", "crowd prior", "MV", "DS (ML)", "IWMV"], rows)


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
    # online partial_fit cost
    m = OnlineDawidSkene(prior_strength=2.0)
    n_items = 51_200
    b = 256
    sel_items, sel_workers, sel_labels = items[: n_items * 5], workers[: n_items * 5], labels[: n_items * 5]
    names_w = np.array([f"llm{j}" for j in range(5)], dtype=object)[sel_workers]
    names_l = np.array([f"c{k}" for k in range(4)], dtype=object)[sel_labels]
    t0 = time.perf_counter()
    for s in range(0, n_items, b):
        sl = slice(s * 5, (s + b) * 5)
        m.partial_fit(sel_items[sl], names_w[sl], names_l[sl])
    t_pf = time.perf_counter() - t0
    votes = {f"llm{j}": f"c{k}" for j, k in enumerate([0, 1, 0, 2, 0])}
    t0 = time.perf_counter()
    for _ in range(20000):
        m.posterior(votes)
    t_post = (time.perf_counter() - t0) / 20000
    m1 = OnlineDawidSkene(prior_strength=2.0, inner_iter=1)
    t0 = time.perf_counter()
    for s in range(0, n_items, b):
        sl = slice(s * 5, (s + b) * 5)
        m1.partial_fit(sel_items[sl], names_w[sl], names_l[sl])
    t_pf1 = time.perf_counter() - t0
    print(
        f"online partial_fit: {1e6 * t_pf / n_items:.2f} us/item (batches of {b}, 5 workers, 4 classes, "
        f"inner_iter={m.inner_iter}); {1e6 * t_pf1 / n_items:.2f} us/item with inner_iter=1; "
        f"posterior(): {1e6 * t_post:.2f} us/item"
    )
    return None if t_ck is None else t_ck / t_ours


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--crowd", type=Path, default=REPO / ".." / "shared" / "data" / "crowd")
    ap.add_argument(
        "--llm", type=Path, default=REPO / ".." / "shared" / "data" / "llm_predictions" / "by_attribute"
    )
    ap.add_argument(
        "--skip-crowdkit", action="store_true", help="no crowd-kit timing (speedup line prints n/a)"
    )
    args = ap.parse_args()
    if not args.crowd.is_dir():
        sys.exit(
            f"crowd datasets not found at {args.crowd.resolve()} (expected ../shared/data/crowd next to the repo)"
        )
    try:
        import crowdkit  # noqa: F401
    except ImportError:
        if not args.skip_crowdkit:
            sys.exit("crowd-kit is not installed: pip install -e '.[bench]' (or pass --skip-crowdkit)")
    if not args.skip_crowdkit:
        crowd(args.crowd)
    if args.llm.is_dir():
        llm(args.llm)
    products = REPO / ".." / "shared" / "data" / "products" / "products.jsonl"
    if products.exists():
        simulated_panel(products)
    else:
        print(f"LLM predictions not found at {args.llm.resolve()}; skipped")
    ratio = speed(args.skip_crowdkit)
    print(f"ds_speedup_vs_crowdkit={ratio:.1f}" if ratio is not None else "ds_speedup_vs_crowdkit=n/a")


if __name__ == "__main__":
    main()
