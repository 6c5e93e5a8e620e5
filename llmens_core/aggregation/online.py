"""Online Dawid-Skene (online EM, Cappé & Moulines 2009) with mergeable, serialisable sufficient statistics.

Sufficient statistics ``S`` are per-item averages of the E-step: soft confusion counts per worker (J, K, K) and
soft class counts (K,). One online step folds a delta of ``b`` items in as
``S <- (1 - eta) S + eta * delta / b`` where ``eta = 1 - prod_{n = t+1}^{t+b} (1 - gamma_n)`` and
``gamma_n = max(min(1, (n - 1 + t0) ** -kappa), eta_min)``: ``t`` counts items, so a delta of ``b`` items moves
``S`` as ``b`` single-item steps would, whatever the batch size (the stream sends deltas of any size).
The M-step turns averages into counts with the effective number of items behind them,
``n_eff = 1 / sum(weights**2)`` (``n`` for plain averaging), and adds the Dirichlet prior:
``theta[j, k] = normalise(n_eff S[j, k] + alpha)``, ``pi = normalise(n_eff S_class + beta)``.
A cold model (``S = 0``) is the prior: every worker equally reliable, i.e. majority vote.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np
import orjson

from llmens_core.aggregation import _em
from llmens_core.aggregation._votes import _as_1d, abstain_mask, factorize

__all__ = ["OnlineDawidSkene", "SufficientStats", "clamped_stats"]

_FORMAT = 1


def _jsonable(x):
    return x if isinstance(x, (str, int, float, bool)) or x is None else str(x)


class SufficientStats:
    """Additive E-step statistics, keyed by worker and class *names* so stats from different models merge.

    Attributes:
        workers: list of worker names (J); classes: list of class names (K).
        confusion: float array (J, K, K), ``[worker, true class, given label]`` soft counts.
        class_counts: float array (K,) soft counts of true classes.
        n_items: number of items (with at least one vote) the counts come from.
    """

    __slots__ = ("workers", "classes", "confusion", "class_counts", "n_items")

    def __init__(self, workers=(), classes=(), confusion=None, class_counts=None, n_items: float = 0.0):
        self.workers = list(workers)
        self.classes = list(classes)
        J, K = len(self.workers), len(self.classes)
        self.confusion = (
            np.zeros((J, K, K)) if confusion is None else np.asarray(confusion, dtype=float).reshape(J, K, K)
        )
        self.class_counts = (
            np.zeros(K) if class_counts is None else np.asarray(class_counts, dtype=float).reshape(K)
        )
        self.n_items = float(n_items)

    def aligned(self, workers: Sequence[Hashable], classes: Sequence[Hashable]) -> SufficientStats:
        """The same statistics laid out on ``workers`` x ``classes`` (supersets of this one's names)."""
        wi = {w: j for j, w in enumerate(workers)}
        ci = {c: k for k, c in enumerate(classes)}
        missing = [w for w in self.workers if w not in wi] + [c for c in self.classes if c not in ci]
        if missing:
            raise ValueError(f"names missing from the target layout: {missing[:10]}")
        out = SufficientStats(workers, classes, n_items=self.n_items)
        if self.workers and self.classes:
            jw = np.array([wi[w] for w in self.workers])
            kc = np.array([ci[c] for c in self.classes])
            out.confusion[np.ix_(jw, kc, kc)] = self.confusion
            out.class_counts[kc] = self.class_counts
        elif self.classes:
            out.class_counts[np.array([ci[c] for c in self.classes])] = self.class_counts
        return out

    def merge(self, other: SufficientStats) -> SufficientStats:
        """Sum of two statistics over the union of their workers and classes (a new object)."""
        workers = list(self.workers) + [w for w in other.workers if w not in set(self.workers)]
        classes = list(self.classes) + [c for c in other.classes if c not in set(self.classes)]
        a, b = self.aligned(workers, classes), other.aligned(workers, classes)
        return SufficientStats(
            workers,
            classes,
            a.confusion + b.confusion,
            a.class_counts + b.class_counts,
            a.n_items + b.n_items,
        )

    def __add__(self, other: SufficientStats) -> SufficientStats:
        return self.merge(other)

    def to_dict(self) -> dict:
        return {
            "format": _FORMAT,
            "workers": self.workers,
            "classes": self.classes,
            "confusion": self.confusion.ravel().tolist(),
            "class_counts": self.class_counts.tolist(),
            "n_items": self.n_items,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> SufficientStats:
        return cls(d["workers"], d["classes"], d["confusion"], d["class_counts"], d["n_items"])

    def to_bytes(self) -> bytes:
        """orjson encoding; floats round-trip exactly. Names must be JSON scalars (str/int)."""
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_bytes(cls, b: bytes | bytearray | memoryview | str) -> SufficientStats:
        return cls.from_dict(orjson.loads(b))

    def __repr__(self) -> str:
        return (
            f"SufficientStats(workers={len(self.workers)}, classes={self.classes}, n_items={self.n_items:g})"
        )


def clamped_stats(
    items: Iterable[tuple[Mapping[Hashable, Hashable | None], Hashable]], classes: Sequence[Hashable] = ()
) -> SufficientStats:
    """E-step statistics of items whose true class is known (gold feedback), as one mergeable delta.

    ``items``: ``(votes, gold)`` pairs, ``votes`` worker -> label (``None`` abstains). Each item's posterior is
    clamped to the one-hot vector of ``gold`` instead of the model's posterior, so a worker's vote adds a whole
    count to ``confusion[worker, gold, vote]`` and the item adds one to ``class_counts[gold]``: folded in with
    :meth:`OnlineDawidSkene.apply`, gold items pull every confusion matrix towards what the workers really did.
    Items without a usable vote are left out (as in :meth:`OnlineDawidSkene.batch_stats`). ``classes`` fixes the
    layout's first classes (e.g. the model's); labels and gold classes met in ``items`` are appended.
    """
    cls = list(classes)
    cid = {c: k for k, c in enumerate(cls)}
    workers: list = []
    wid: dict = {}
    w_idx: list[int] = []
    t_idx: list[int] = []
    l_idx: list[int] = []
    gold_idx: list[int] = []
    for votes, gold in items:
        if gold is None:
            raise ValueError("a gold label must be a class, not None")
        pairs = [(w, lab) for w, lab in votes.items() if lab is not None]
        if not pairs:
            continue
        for c in (gold, *(lab for _, lab in pairs)):
            if c not in cid:
                cid[c] = len(cls)
                cls.append(c)
        kg = cid[gold]
        gold_idx.append(kg)
        for w, lab in pairs:
            j = wid.get(w)
            if j is None:
                j = wid[w] = len(workers)
                workers.append(w)
            w_idx.append(j)
            t_idx.append(kg)
            l_idx.append(cid[lab])
    K = len(cls)
    conf = np.zeros((len(workers), K, K))
    if w_idx:
        np.add.at(conf, (np.asarray(w_idx), np.asarray(t_idx), np.asarray(l_idx)), 1.0)
    class_counts = np.bincount(np.asarray(gold_idx, dtype=np.int64), minlength=K).astype(float)
    return SufficientStats(workers, cls, conf, class_counts, float(len(gold_idx)))


class OnlineDawidSkene:
    """Streaming Dawid-Skene. See the module docstring for the update rule.

    Args:
        classes: initial label set (more can be added; labels met in ``partial_fit`` are added automatically).
        prior_accuracy, prior_strength: Dirichlet prior per confusion row (see :class:`DawidSkene`).
        class_prior_strength: pseudo-count per class in the class prior.
        kappa, t0, eta_min: step sizes ``gamma_n = max(min(1, (n - 1 + t0)^-kappa), eta_min)`` per item.
        families: mapping worker -> family (e.g. base model); a family's votes on one item are pooled with weight
            ``1 / (1 + family_rho (n - 1))`` each. ``"prefix"`` derives the family from the name before ``|``.
        inner_iter: E-steps per mini-batch in ``partial_fit`` (the batch's posterior is refined with the
            parameters the batch itself moves; 1 = plain online EM).
        pooled_prior, sparse_strength, class_prior: as in :class:`DawidSkene` (the M-step from ``n_eff * S``
            uses the same empirical-Bayes / sparse one-coin prior and the same class-prior choice). A cold model
            or a new worker (no counts) gets the prior centre ``normalise(alpha)`` either way.

    Attributes: ``version`` (int, +1 per ``partial_fit``/``apply``), ``classes_``, ``workers_``,
    ``confusion_`` (J, K, K), ``priors_`` (K,), ``skills_``/``weights_`` (J,), ``n_items_`` (items seen).
    """

    def __init__(
        self,
        classes: Sequence[str] | None = None,
        *,
        prior_accuracy: float = 0.7,
        prior_strength: float = 2.0,
        class_prior_strength: float = 1.0,
        kappa: float = 1.0,
        t0: float = 1.0,
        eta_min: float = 1e-4,
        families: Mapping[str, str] | str | None = None,
        family_rho: float = 1.0,
        inner_iter: int = 3,
        pooled_prior: bool | str = False,
        prior_strength_per_class: float | None = None,
        sparse_strength: float = 0.0,
        class_prior: str = "learned",
    ):
        if class_prior not in ("learned", "uniform"):
            raise ValueError(f"class_prior must be 'learned' or 'uniform', got {class_prior!r}")
        if pooled_prior not in (True, False, "sparse", "onecoin"):
            raise ValueError(f"pooled_prior must be True, False, 'sparse' or 'onecoin', got {pooled_prior!r}")
        self.pooled_prior = pooled_prior
        self.prior_strength_per_class = prior_strength_per_class
        self.sparse_strength = float(sparse_strength)
        self.class_prior = class_prior
        _em.prior_alpha(2, prior_accuracy, prior_strength)  # validates
        if not 0.5 < kappa <= 1.0:
            raise ValueError("kappa must be in (0.5, 1]")
        if t0 < 1.0:
            raise ValueError("t0 must be >= 1")
        self.prior_accuracy = float(prior_accuracy)
        self.prior_strength = float(prior_strength)
        self.class_prior_strength = float(class_prior_strength)
        self.kappa, self.t0, self.eta_min = float(kappa), float(t0), float(eta_min)
        self.family_rho = float(family_rho)
        self.inner_iter = int(inner_iter)
        self._family_mode = families if isinstance(families, str) else None
        self.families: dict = {} if isinstance(families, str) or families is None else dict(families)
        self.version = 0
        self.t = 0.0  # items seen (drives the step size)
        self.q = 0.0  # sum of squared averaging weights; n_eff = 1/q
        self.n_items_ = 0.0
        self.workers_: list = []
        self.classes_: list = []
        self._widx: dict = {}
        self._cidx: dict = {}
        self._fam_codes: dict = {}
        self._wfam = np.zeros(0, dtype=np.int64)
        self.S = np.zeros((0, 0, 0))
        self.S_class = np.zeros(0)
        if classes:
            self.add_classes(classes)

    # ------------------------------------------------------------------ names
    def _family_of(self, w):
        if w in self.families:
            return self.families[w]
        if self._family_mode in ("prefix", "auto") and "|" in str(w):
            return str(w).split("|", 1)[0]
        return ("__own__", w)

    def add_workers(self, names: Iterable[Hashable]) -> list:
        """Add workers (new LLMs start from the prior). Returns the names actually added."""
        new = [w for w in dict.fromkeys(names) if w not in self._widx]
        if new:
            K = len(self.classes_)
            for w in new:
                self._widx[w] = len(self.workers_)
                self.workers_.append(w)
            fams = [self._fam_codes.setdefault(self._family_of(w), len(self._fam_codes)) for w in new]
            self._wfam = np.concatenate([self._wfam, np.asarray(fams, dtype=np.int64)])
            self.S = np.concatenate([self.S, np.zeros((len(new), K, K))], axis=0)
            self._refresh()
        return new

    def add_classes(self, names: Iterable[Hashable]) -> list:
        """Add classes (every worker's confusion gets a prior row/column for them). Returns the names added."""
        new = [c for c in dict.fromkeys(names) if c not in self._cidx and c is not None]
        if new:
            J, K = len(self.workers_), len(self.classes_)
            K2 = K + len(new)
            for c in new:
                self._cidx[c] = len(self.classes_)
                self.classes_.append(c)
            S = np.zeros((J, K2, K2))
            S[:, :K, :K] = self.S
            self.S = S
            self.S_class = np.concatenate([self.S_class, np.zeros(len(new))])
            self._refresh()
        return new

    def set_families(self, families: Mapping[Hashable, Hashable]) -> None:
        """Declare or change families (worker -> family)."""
        self.families.update(families)
        self._fam_codes = {}
        self._wfam = np.asarray(
            [self._fam_codes.setdefault(self._family_of(w), len(self._fam_codes)) for w in self.workers_],
            dtype=np.int64,
        )
        self._refresh()

    # ------------------------------------------------------------------ parameters
    @property
    def n_eff(self) -> float:
        return 1.0 / self.q if self.q > 0 else 0.0

    def _refresh(self) -> None:
        """M-step from S: recompute confusion, priors and the lookup tables ``posterior`` uses."""
        _J, K = len(self.workers_), len(self.classes_)
        self._ready = K > 0
        if K == 0:
            return
        strength = (self.prior_strength_per_class * max(1, K - 1) if self.prior_strength_per_class
                    else self.prior_strength)
        alpha = _em.prior_alpha(K, self.prior_accuracy, max(strength, 1e-9))
        n = self.n_eff
        counts = n * self.S
        if self.pooled_prior == "sparse" and len(self.workers_):
            a = _em.sparse_onecoin_prior(
                counts, alpha, self.prior_accuracy, self.prior_strength, self.sparse_strength
            )
        elif self.pooled_prior == "onecoin" and len(self.workers_):
            a = _em.onecoin_prior(counts, self.prior_accuracy, strength)
        elif self.pooled_prior and len(self.workers_):
            a = self.prior_strength * _em.normalise_rows(counts.sum(axis=0) + alpha)[None]
        else:
            a = alpha[None]
        self.confusion_ = _em.normalise_rows(counts + a)
        self.priors_ = (
            np.full(K, 1.0 / K)
            if self.class_prior == "uniform"
            else _em.normalise_rows(n * self.S_class + self.class_prior_strength)
        )
        self._prior_theta = _em.normalise_rows(alpha)
        self._log_theta = np.log(self.confusion_)
        self._log_pi = np.log(self.priors_)
        # [worker][given label] -> log theta[:, label] row (K,), for posterior()
        self._lt_rows = np.ascontiguousarray(self._log_theta.transpose(0, 2, 1))
        self._prior_rows = np.ascontiguousarray(np.log(self._prior_theta).T)
        self._wfam_list = self._wfam.tolist()

    @property
    def skills_(self) -> np.ndarray:
        return np.einsum("k,jkk->j", self.priors_, self.confusion_) if self.workers_ else np.zeros(0)

    @property
    def weights_(self) -> np.ndarray:
        K = max(len(self.classes_), 2)
        p = np.clip(self.skills_, 1e-9, 1 - 1e-9)
        return np.log((K - 1) * p / (1 - p))

    # ------------------------------------------------------------------ inference
    def posterior(self, votes: Mapping[Hashable, Hashable | None]) -> np.ndarray:
        """Posterior over ``classes_`` for one item, shape (K,). ``votes``: worker -> label (``None`` abstains).

        Unknown workers use the prior confusion; labels outside ``classes_`` are ignored. No votes -> ``priors_``.
        """
        K = len(self.classes_)
        if K == 0:
            raise ValueError("the model has no classes yet")
        acc = self._log_pi.copy()
        cidx, widx = self._cidx, self._widx
        rows = []
        fams = []
        for w, lab in votes.items():
            if lab is None:
                continue
            k = cidx.get(lab)
            if k is None:
                continue
            j = widx.get(w)
            if j is None:
                rows.append(self._prior_rows[k])
                f = self._family_of(w)
                fams.append(self._fam_codes.get(f, f))
            else:
                rows.append(self._lt_rows[j, k])
                fams.append(self._wfam_list[j])
        if rows:
            if self.family_rho and len(set(fams)) < len(fams):
                cnt: dict = {}
                for f in fams:
                    cnt[f] = cnt.get(f, 0) + 1
                rho = self.family_rho
                for r, f in zip(rows, fams, strict=False):
                    acc += r / (1.0 + rho * (cnt[f] - 1))
            else:
                for r in rows:
                    acc += r
        acc -= acc.max()
        np.exp(acc, out=acc)
        acc /= acc.sum()
        return acc

    def predict(self, votes: Mapping[Hashable, Hashable | None]) -> Hashable:
        """Most probable class for one item."""
        return self.classes_[int(np.argmax(self.posterior(votes)))]

    def _encode_batch(self, items, workers, labels, *, grow: bool):
        """Codes of a batch; with ``grow=False`` unknown workers get temporary codes ``J..`` (prior rows) and
        unknown labels are dropped. Returns ``(items_, icode, wcode, lcode, extra_workers)``."""
        it = _as_1d(items, "items")
        wk = _as_1d(workers, "workers")
        lb = _as_1d(labels, "labels")
        if not (len(it) == len(wk) == len(lb)):
            raise ValueError("items, workers and labels must have the same length")
        keep = ~abstain_mask(lb)
        it, wk, lb = it[keep], wk[keep], lb[keep]
        wl_list, lb_list = wk.tolist(), lb.tolist()
        if grow:
            self.add_classes(c for c in lb_list if c not in self._cidx)
            self.add_workers(w for w in wl_list if w not in self._widx)
        items_, icode = factorize(it)
        cidx, widx = self._cidx, self._widx
        extra: dict = {}
        J = len(self.workers_)

        def wcode_of(w):
            j = widx.get(w)
            if j is None:
                j = extra.setdefault(w, J + len(extra))
            return j

        lcode = np.fromiter((cidx.get(c, -1) for c in lb_list), dtype=np.int64, count=len(lb_list))
        wcode = np.fromiter((wcode_of(w) for w in wl_list), dtype=np.int64, count=len(wl_list))
        ok = lcode >= 0
        return items_, icode[ok], wcode[ok], lcode[ok], list(extra)

    def _batch_posterior(self, icode, wcode, lcode, n_items, extra=()) -> np.ndarray:
        K = len(self.classes_)
        log_theta, wfam = self._log_theta, self._wfam
        if extra:
            prior = np.log(self._prior_theta)
            log_theta = np.concatenate([log_theta, np.broadcast_to(prior, (len(extra), K, K))], axis=0)
            codes = dict(self._fam_codes)
            wfam = np.concatenate(
                [
                    wfam,
                    np.asarray(
                        [codes.setdefault(self._family_of(w), len(codes)) for w in extra], dtype=np.int64
                    ),
                ]
            )
        c = _em.vote_weights(icode, wcode, wfam, self.family_rho, n_items)
        lt = _em.log_joint(icode, wcode * K + lcode, c, self._log_pi, log_theta, n_items)
        return _em.softmax_rows(lt)[0]

    def predict_proba_batch(self, items, workers, labels) -> tuple[np.ndarray, np.ndarray]:
        """Posteriors for many items at once: ``(items (I,), proba (I, K))``; unknown workers use the prior, labels
        outside ``classes_`` are ignored. Does not change the model."""
        items_, icode, wcode, lcode, extra = self._encode_batch(items, workers, labels, grow=False)
        if not self.classes_:
            raise ValueError("the model has no classes yet")
        return items_, self._batch_posterior(icode, wcode, lcode, len(items_), extra)

    # ------------------------------------------------------------------ learning
    def _stats_from(self, icode, wcode, lcode, T, n_items) -> SufficientStats:
        J, K = len(self.workers_), len(self.classes_)
        has = np.bincount(icode, minlength=n_items) > 0
        Tm = T * has[:, None]
        conf = _em.confusion_counts(icode, wcode * K + lcode, Tm, J)
        return SufficientStats(
            list(self.workers_), list(self.classes_), conf, Tm.sum(axis=0), float(has.sum())
        )

    def batch_stats(self, items, workers, labels) -> SufficientStats:
        """E-step contribution of a mini-batch under the current parameters (does not change the model)."""
        items_, icode, wcode, lcode, _ = self._encode_batch(items, workers, labels, grow=True)
        T = self._batch_posterior(icode, wcode, lcode, len(items_))
        return self._stats_from(icode, wcode, lcode, T, len(items_))

    def item_stats(
        self, votes: Mapping[Hashable, Hashable | None], posterior: np.ndarray | None = None
    ) -> SufficientStats:
        """E-step contribution of one item; unknown workers and labels are included by name (the learner adds
        them when the stats are applied). ``posterior`` (K,) over ``classes_`` is computed when not given."""
        pairs = [(w, lab) for w, lab in votes.items() if lab is not None]
        if not pairs:
            return SufficientStats([], list(self.classes_))
        classes = list(self.classes_) + [
            c for c in dict.fromkeys(lab for _, lab in pairs) if c not in self._cidx
        ]
        workers = list(dict.fromkeys(w for w, _ in pairs))
        K = len(classes)
        p = self.posterior(votes) if posterior is None else np.asarray(posterior, dtype=float)
        T = np.zeros(K)
        T[: len(p)] = p
        cid = {c: k for k, c in enumerate(classes)}
        wid = {w: j for j, w in enumerate(workers)}
        conf = np.zeros((len(workers), K, K))
        for w, lab in pairs:
            conf[wid[w], :, cid[lab]] += T
        return SufficientStats(workers, classes, conf, T, 1.0)

    def gold_stats(self, items: Iterable[tuple[Mapping[Hashable, Hashable | None], Hashable]]) -> SufficientStats:
        """Statistics of gold-labelled items (posterior clamped to the gold class), laid out on ``classes_``
        first; see :func:`clamped_stats`. Does not change the model: ``apply`` the result to learn from it."""
        return clamped_stats(items, self.classes_)

    def _step_size(self, b: float) -> float:
        if b <= 0:
            return 0.0
        n = self.t + np.arange(1, int(math.ceil(b)) + 1, dtype=float)
        g = np.maximum(np.minimum(1.0, (n - 1.0 + self.t0) ** -self.kappa), self.eta_min)
        return float(-np.expm1(np.log1p(-np.minimum(g, 1.0 - 1e-16)).sum())) if (g < 1).all() else 1.0

    def apply(self, stats: SufficientStats) -> int:
        """Fold a (merged) delta in as one online step; returns the new ``version``."""
        self.add_classes(c for c in stats.classes if c not in self._cidx)
        self.add_workers(w for w in stats.workers if w not in self._widx)
        b = stats.n_items
        if b > 0:
            d = stats.aligned(self.workers_, self.classes_)
            eta = self._step_size(b)
            self.S = (1.0 - eta) * self.S + eta * (d.confusion / b)
            self.S_class = (1.0 - eta) * self.S_class + eta * (d.class_counts / b)
            self.q = (1.0 - eta) ** 2 * self.q + eta**2 / b
            self.t += b
            self.n_items_ += b
            self._refresh()
        self.version += 1
        return self.version

    def partial_fit(self, items, workers, labels) -> OnlineDawidSkene:
        """One online-EM step on a mini-batch of long-format votes (new workers and classes are added)."""
        items_, icode, wcode, lcode, _ = self._encode_batch(items, workers, labels, grow=True)
        if not len(self.classes_):
            self.version += 1
            return self
        n = len(items_)
        T = self._batch_posterior(icode, wcode, lcode, n)
        stats = self._stats_from(icode, wcode, lcode, T, n)
        if self.inner_iter > 1 and stats.n_items > 0:
            snap = (self.S.copy(), self.S_class.copy(), self.q, self.t, self.n_items_, self.version)
            for _ in range(self.inner_iter - 1):
                self.apply(stats)
                T = self._batch_posterior(icode, wcode, lcode, n)
                stats = self._stats_from(icode, wcode, lcode, T, n)
                self.S, self.S_class, self.q, self.t, self.n_items_, self.version = snap
                snap = (self.S.copy(), self.S_class.copy(), self.q, self.t, self.n_items_, self.version)
        self.apply(stats)
        return self

    # ------------------------------------------------------------------ state
    def stats(self) -> SufficientStats:
        """Current averaged statistics scaled to counts (``n_eff * S``), as a :class:`SufficientStats`."""
        n = self.n_eff
        return SufficientStats(list(self.workers_), list(self.classes_), n * self.S, n * self.S_class, n)

    def summary(self) -> dict:
        """JSON-able snapshot of the model."""
        fam_of = {w: self._family_of(w) for w in self.workers_}
        out = {
            "version": self.version,
            "classes": [_jsonable(c) for c in self.classes_],
            "workers": [_jsonable(w) for w in self.workers_],
            "families": {
                _jsonable(w): (None if isinstance(f, tuple) else _jsonable(f)) for w, f in fam_of.items()
            },
            "n_items": self.n_items_,
            "n_eff": self.n_eff,
        }
        if self.classes_:
            out["class_priors"] = dict(zip(out["classes"], self.priors_.tolist(), strict=False))
            out["accuracy"] = dict(zip(out["workers"], self.skills_.tolist(), strict=False))
            out["weight"] = dict(zip(out["workers"], self.weights_.tolist(), strict=False))
            out["confusion"] = {w: self.confusion_[j].tolist() for j, w in enumerate(out["workers"])}
        return out

    def _config(self) -> dict:
        return {
            "prior_accuracy": self.prior_accuracy,
            "prior_strength": self.prior_strength,
            "class_prior_strength": self.class_prior_strength,
            "kappa": self.kappa,
            "t0": self.t0,
            "eta_min": self.eta_min,
            "family_rho": self.family_rho,
            "inner_iter": self.inner_iter,
            "pooled_prior": self.pooled_prior,
            "prior_strength_per_class": self.prior_strength_per_class,
            "sparse_strength": self.sparse_strength,
            "class_prior": self.class_prior,
        }

    def to_bytes(self) -> bytes:
        """Exact serialisation (orjson; worker/class/family names must be str or int)."""
        return orjson.dumps(
            {
                "format": _FORMAT,
                "config": self._config(),
                "family_mode": self._family_mode,
                "families": list(self.families.items()),
                "version": self.version,
                "t": self.t,
                "q": self.q,
                "n_items": self.n_items_,
                "workers": self.workers_,
                "classes": self.classes_,
                "S": self.S.ravel().tolist(),
                "S_class": self.S_class.tolist(),
            }
        )

    @classmethod
    def from_bytes(cls, b: bytes | bytearray | memoryview | str) -> OnlineDawidSkene:
        d = orjson.loads(b)
        m = cls(None, families=d["family_mode"], **d["config"])
        m.families = {w: f for w, f in d["families"]}
        m.add_classes(d["classes"])
        m.add_workers(d["workers"])
        J, K = len(m.workers_), len(m.classes_)
        m.S = np.asarray(d["S"], dtype=float).reshape(J, K, K)
        m.S_class = np.asarray(d["S_class"], dtype=float)
        m.version, m.t, m.q, m.n_items_ = d["version"], d["t"], d["q"], d["n_items"]
        m._refresh()
        return m

    @classmethod
    def from_batch(cls, model, *, n_items: float | None = None, **kw) -> OnlineDawidSkene:
        """Warm start from a fitted :class:`DawidSkene` (e.g. ``llmens fit``): S = its soft counts per item."""
        classes = model.classes_.tolist()
        families = kw.pop("families", None)
        if families is None and model.families is not None:
            families = model.families if not isinstance(model.families, str) else model.families
        o = cls(classes, families=families, family_rho=model.family_rho, **kw)
        o.add_workers(model.workers_.tolist())
        n = float(model.n_items_with_votes_) if n_items is None else float(n_items)
        if n > 0:
            o.S = model.counts_ / model.n_items_with_votes_
            o.S_class = model.class_counts_ / model.n_items_with_votes_
            o.q = 1.0 / n
            o.t = n
            o.n_items_ = n
        o._refresh()
        o.version = 1
        return o
