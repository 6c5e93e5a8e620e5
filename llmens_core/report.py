"""Model report: per attribute, every LLM's learned confusion matrix as a heatmap and its accuracy/weight as bars.

Input is ``{attribute: OnlineDawidSkene.summary()}`` — what a worker's ``/model`` page serves — or recorded
LabelVote JSONL fitted offline. Output: ``<attribute>_confusion.png``, ``<attribute>_weights.png`` per attribute
and one ``index.html`` embedding them with a table of accuracies and weights. matplotlib's Agg backend: no display.
With a worker's ``/counters`` (``counters=``), the page opens with the LLM cost: per LLM its requests, tokens and
dollars, and the total per 1,000 decisions (:mod:`llmens_core.costs`). With a worker's ``/student`` (issue 33),
each attribute's section says what its student learnt, how well it agrees with the panel and what it decided alone;
the student's confusion matrix and weight are among the members' (worker ``student``).
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

__all__ = ["cost_section", "fetch_counters", "fetch_json", "fetch_summaries", "load_summaries", "plot_confusions",
           "plot_weights", "student_section", "summaries_from_votes", "write_report"]


def fetch_summaries(url: str, timeout: float = 10.0) -> dict[str, dict]:
    """GET a worker's ``/model`` view (``{attribute: summary}``)."""
    from urllib.request import urlopen

    with urlopen(url, timeout=timeout) as resp:  # noqa: S310 - an operator-given http(s) URL
        data = orjson.loads(resp.read())
    if not isinstance(data, dict):
        raise ValueError(f"{url} did not return a JSON object of attribute summaries")
    return data


def fetch_json(url: str, timeout: float = 10.0) -> Any:
    """GET a JSON page (e.g. a worker's ``/student``)."""
    from urllib.request import urlopen

    with urlopen(url, timeout=timeout) as resp:  # noqa: S310 - an operator-given http(s) URL
        return orjson.loads(resp.read())


def fetch_counters(url: str, timeout: float = 10.0) -> dict[str, Any]:
    """GET a worker's ``/counters`` page (``{"worker": {...}, "llm": {name: counters}, ...}``)."""
    from urllib.request import urlopen

    with urlopen(url, timeout=timeout) as resp:  # noqa: S310 - an operator-given http(s) URL
        data = orjson.loads(resp.read())
    if not isinstance(data, dict) or not isinstance(data.get("llm"), dict):
        raise ValueError(f"{url} did not return a worker's counters (no 'llm' object)")
    return data


def cost_section(counters: Mapping[str, Any]) -> str:
    """HTML: per LLM requests, tokens in/out, dollars and dollars per 1,000 decisions, and the total line."""
    from llmens_core.costs import cost_line, cost_summary, querying_mode

    worker = counters.get("worker") or {}
    s = cost_summary(counters.get("llm") or {}, float(worker.get("decisions", 0) or 0))

    def per_k(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.4f}"

    rows = "".join(
        f"<tr><td>{html.escape(str(n))}</td><td>{c['requests']:,.0f}</td><td>{c['tokens_in']:,.0f}</td>"
        f"<td>{c['tokens_out']:,.0f}</td><td>{c['usd']:.4f}</td><td>{per_k(c['usd_per_1k_decisions'])}</td></tr>"
        for n, c in s["llm"].items())
    rows += (f"<tr><th>all</th><th>{sum(c['requests'] for c in s['llm'].values()):,.0f}</th><th></th><th></th>"
             f"<th>{s['usd']:.4f}</th><th>{per_k(s['usd_per_1k_decisions'])}</th></tr>")
    return (f"<section><h2>LLM cost</h2><p>{html.escape(cost_line(s, querying_mode(worker)))}. Tokens as each "
            "response reported them, priced at each LLM's configured price per 1k input/output tokens.</p>"
            "<table><tr><th>LLM</th><th>requests</th><th>tokens in</th><th>tokens out</th><th>USD</th>"
            "<th>USD per 1,000 decisions</th></tr>" + rows + "</table></section>")


def summaries_from_votes(path: str | Path, **kw: Any) -> dict[str, dict]:
    """Fit every attribute on recorded LabelVote JSONL and return the models' summaries."""
    try:
        from llmens_core.aggregation.offline import fit_votes
    except ImportError:  # pragma: no cover - fallback when the offline fitter is not there
        fit_votes = None
    if fit_votes is not None:
        return {a: m.summary() for a, m in fit_votes(path, **kw).items()}
    from collections import defaultdict

    from llmens_core.aggregation.online import OnlineDawidSkene

    cols: dict[str, tuple[list, list, list]] = defaultdict(lambda: ([], [], []))
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                v = orjson.loads(line)
                it, wk, lb = cols[v["attribute"]]
                it.append(v["product_id"])
                wk.append(v["llm"])
                lb.append(v.get("label"))
    out = {}
    for attr, (it, wk, lb) in sorted(cols.items()):
        m = OnlineDawidSkene()
        for _ in range(5):
            m.partial_fit(it, wk, lb)
        out[attr] = m.summary()
    return out


def load_summaries(*, url: str | None = None, votes: str | Path | None = None,
                   summary: str | Path | None = None) -> dict[str, dict]:
    """Exactly one source: a worker URL, a LabelVote JSONL, or a JSON file of ``{attribute: summary}``."""
    given = [x for x in (url, votes, summary) if x is not None]
    if len(given) != 1:
        raise ValueError("give exactly one of url, votes, summary")
    if url is not None:
        return fetch_summaries(url)
    if votes is not None:
        return summaries_from_votes(votes)
    data = orjson.loads(Path(summary).read_bytes())  # type: ignore[arg-type]
    if not isinstance(data, dict):
        raise ValueError(f"{summary}: expected a JSON object {{attribute: summary}}")
    return data


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("_") or "attribute"


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_confusions(attribute: str, summary: Mapping[str, Any], path: str | Path) -> Path | None:
    """One heatmap per LLM of P(answer | true class), rows = true class, annotated; ``None`` if no model yet."""
    import numpy as np

    classes = [str(c) for c in summary.get("classes") or []]
    confusion = summary.get("confusion") or {}
    workers = [w for w in summary.get("workers") or [] if w in confusion]
    if not classes or not workers:
        return None
    plt = _plt()
    K, J = len(classes), len(workers)
    ncols = min(J, 3)
    nrows = math.ceil(J / ncols)
    cell = max(0.55, min(0.9, 6.0 / K))
    side = max(3.6, cell * K + 1.8)
    fig, axes = plt.subplots(nrows, ncols, figsize=(side * ncols + 0.8, side * nrows + 0.9), squeeze=False,
                             constrained_layout=True)
    accuracy = summary.get("accuracy") or {}
    weight = summary.get("weight") or {}
    im = None
    annotate = K <= 14
    fs = 9 if K <= 8 else 7
    for idx, w in enumerate(workers):
        ax = axes[idx // ncols][idx % ncols]
        m = np.asarray(confusion[w], dtype=float).reshape(K, K)
        im = ax.imshow(m, cmap="Blues", vmin=0.0, vmax=1.0)
        ax.set_xticks(range(K), classes, rotation=45, ha="right", fontsize=fs)
        ax.set_yticks(range(K), classes, fontsize=fs)
        ax.set_xlabel("LLM answer", fontsize=fs + 1)
        ax.set_ylabel("true class (estimated)", fontsize=fs + 1)
        title = str(w)
        if w in accuracy:
            title += f"\naccuracy {accuracy[w]:.2f}" + (f", weight {weight[w]:.2f}" if w in weight else "")
        ax.set_title(title, fontsize=fs + 2)
        if annotate:
            for i in range(K):
                for j in range(K):
                    v = m[i, j]
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=fs - 1,
                            color="white" if v > 0.55 else "black")
    for idx in range(J, nrows * ncols):
        axes[idx // ncols][idx % ncols].axis("off")
    fig.colorbar(im, ax=axes, shrink=0.6, label="P(answer | true class)")
    version = summary.get("version")
    fig.suptitle(f"{attribute}: learned confusion matrices" + (f" (model v{version})" if version is not None else ""),
                 fontsize=13)
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_weights(attribute: str, summary: Mapping[str, Any], path: str | Path) -> Path | None:
    """Accuracy and vote weight of every LLM, side by side, sorted by accuracy."""
    accuracy = summary.get("accuracy") or {}
    weight = summary.get("weight") or {}
    workers = sorted(accuracy, key=lambda w: -accuracy[w])
    if not workers:
        return None
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 0.45 * len(workers) + 1.8), constrained_layout=True)
    y = range(len(workers))
    acc = [accuracy[w] for w in workers]
    a1.barh(y, acc, color="#4C72B0")
    a1.set_yticks(y, [str(w) for w in workers])
    a1.invert_yaxis()
    a1.set_xlim(0, 1)
    a1.set_xlabel("estimated accuracy")
    for i, v in enumerate(acc):
        a1.text(min(v + 0.01, 0.93), i, f"{v:.2f}", va="center", fontsize=9)
    wts = [float(weight.get(w, 0.0)) for w in workers]
    a2.barh(y, wts, color=["#55A868" if v >= 0 else "#C44E52" for v in wts])
    a2.set_yticks(y, [str(w) for w in workers])
    a2.invert_yaxis()
    a2.axvline(0, color="black", linewidth=0.8)
    a2.set_xlabel("vote weight (log-odds)")
    lo, hi = min(0.0, *wts), max(0.0, *wts)
    pad = 0.15 * (hi - lo or 1.0)
    a2.set_xlim(lo - (pad if lo < 0 else 0), hi + pad)
    for i, v in enumerate(wts):
        a2.text(v, i, f" {v:.2f}", va="center", ha="left" if v >= 0 else "right", fontsize=9)
    fig.suptitle(f"{attribute}: per-LLM accuracy and weight", fontsize=13)
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def student_section(attribute: str, students: Mapping[str, Any]) -> str:
    """HTML: ``attribute``'s student (a worker's ``/student`` page): what it learnt, its prequential agreement with
    the panel and licence per text bucket, and the decisions it made alone, as a member or abstaining."""
    s = (students.get("students") or {}).get(attribute)
    if not s:
        return ""
    roles = (students.get("roles") or {}).get(attribute) or {}
    n = sum(roles.values())
    share = f"{roles.get('alone', 0) / n:.1%}" if n else "n/a"
    agreement = "n/a" if s.get("agreement") is None else f"{s['agreement']:.3f}"
    rows = "".join(
        f"<tr><td>{html.escape(b)}</td><td>{'' if r.get('agreement') is None else format(r['agreement'], '.3f')}</td>"
        f"<td>{r.get('window', 0)}</td><td>{'not licensed' if r.get('threshold') is None else r['threshold']}</td></tr>"
        for b, r in s.items() if isinstance(r, Mapping) and "window" in r)
    return (f"<p>student (text classifier; member <code>student</code> above): version {s.get('version')}, "
            f"{s.get('n_learnt', 0):,} products learnt, agreement with the panel {agreement}; decided alone "
            f"{roles.get('alone', 0):,} of this worker's {n:,} decisions ({share}), voted beside LLMs "
            f"{roles.get('member', 0):,}, abstained {roles.get('abstain', 0):,}.</p><table><tr><th>text</th>"
            f"<th>agreement</th><th>records</th><th>votes from probability</th></tr>{rows}</table>")


def write_report(summaries: Mapping[str, Mapping[str, Any]], out_dir: str | Path,
                 title: str = "llmens model report", counters: Mapping[str, Any] | None = None,
                 students: Mapping[str, Any] | None = None) -> Path:
    """Write PNGs per attribute and ``index.html`` into ``out_dir``; returns the HTML path.

    ``counters``: a worker's ``/counters`` page; when given, the page starts with the LLM cost section.
    ``students``: a worker's ``/student`` page; each attribute's section then says what its student does. The
    student's confusion matrix and weight are the DS model's, shown with the LLMs' once it has learnt its votes.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sections = [cost_section(counters)] if counters else []
    for attr in sorted(summaries):
        s = summaries[attr]
        slug = _slug(attr)
        conf = plot_confusions(attr, s, out / f"{slug}_confusion.png")
        bars = plot_weights(attr, s, out / f"{slug}_weights.png")
        acc, wt = s.get("accuracy") or {}, s.get("weight") or {}
        rows = "".join(
            f"<tr><td>{html.escape(str(w))}</td><td>{acc[w]:.3f}</td><td>{float(wt.get(w, float('nan'))):.3f}</td></tr>"
            for w in sorted(acc, key=lambda w: -acc[w])
        )
        meta = (f"model version {s.get('version', '?')}, items {float(s.get('n_items') or 0):,.0f}, "
                f"classes: {html.escape(', '.join(str(c) for c in s.get('classes') or []))}")
        parts = [f"<section><h2>{html.escape(str(attr))}</h2><p>{meta}</p>"]
        if rows:
            parts.append("<table><tr><th>LLM</th><th>accuracy</th><th>weight</th></tr>" + rows + "</table>")
        if students:
            parts.append(student_section(attr, students))
        for img, alt in ((bars, "accuracy and weight"), (conf, "confusion matrices")):
            if img is not None:
                parts.append(f'<img src="{html.escape(img.name)}" alt="{html.escape(str(attr))} {alt}">')
        if conf is None and bars is None:
            parts.append("<p><em>no learned model yet</em></p>")
        sections.append("".join(parts) + "</section>")
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1400px}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}} td:first-child,th:first-child{{text-align:left}}
img{{max-width:100%;display:block;margin:1em 0}} section{{border-top:2px solid #eee;padding-top:1em}}</style>
</head><body><h1>{html.escape(title)}</h1>
<p>Per attribute: each LLM's learned confusion matrix P(answer | true class) (rows: the class the ensemble
believes is true) and its estimated accuracy and vote weight (log-odds; higher means more trusted).</p>
{''.join(sections) or '<p>No attributes.</p>'}
</body></html>
"""
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
