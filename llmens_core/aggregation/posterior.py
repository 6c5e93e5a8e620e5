"""Posteriors under the chosen candidate, and the E-step statistics they give: what a deciding worker needs.

:class:`PosteriorModel` adds to :class:`~.model.StatisticsModel` the posterior of one item (:meth:`posterior`, the
stream's decision) or of many (:meth:`predict_proba_batch`), and the statistics a batch or an item adds under the
current parameters (:meth:`item_stats`, :meth:`gold_stats`, and the codes-level ``_stats_*`` the learner folds).
Nothing here changes the model. A worker that only decides never learns; the learner is :mod:`.online`.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping

import numpy as np

from llmens_core.aggregation import _em, dependence, difficulty
from llmens_core.aggregation._stats import SufficientStats, clamped_stats
from llmens_core.aggregation._votes import _as_1d, abstain_mask, factorize
from llmens_core.aggregation.model import StatisticsModel

__all__ = ["PosteriorModel", "grown", "grown_counts"]


def grown_counts(a: np.ndarray, J: int, K: int) -> np.ndarray:
    """Counts ``a`` ((J', K', K') or (K',)) zero-padded to J workers and K classes (names are only appended)."""
    if a.ndim == 1:
        return np.pad(a, (0, K - a.shape[0]))
    return np.pad(a, ((0, J - a.shape[0]), (0, K - a.shape[1]), (0, K - a.shape[2])))


def grown(T: np.ndarray, K: int) -> np.ndarray:
    """Posteriors ``T`` (n, K') zero-padded to K classes (classes are only appended)."""
    return T if T.shape[1] == K else np.pad(T, ((0, 0), (0, K - T.shape[1])))


class PosteriorModel(StatisticsModel):
    """A :class:`~.model.StatisticsModel` that computes posteriors and E-step statistics (see the module docstring)."""

    def posterior(self, votes: Mapping[Hashable, Hashable | None]) -> np.ndarray:
        """Posterior over ``classes_`` for one item, shape (K,). ``votes``: worker -> label (``None`` abstains).

        Unknown workers use the prior confusion; labels outside ``classes_`` are ignored. No votes -> ``priors_``.
        """
        if not self.classes_:
            raise ValueError("the model has no classes yet")
        if self._chosen_fit.hard_share > 0.0:
            return self._batch_posterior_of(votes)
        acc = self._log_pi.copy()
        rows, groups = [], []
        for w, lab in votes.items():
            k = self._cidx.get(lab) if lab is not None else None
            if k is None:
                continue
            j = self._widx.get(w)
            rows.append(self._prior_rows[k] if j is None else self._lt_rows[j, k])
            groups.append(("new", w) if j is None else int(self._cluster[j]))
        if rows:
            wts = self._group_weights(groups)
            for r, wt in zip(rows, wts, strict=True):
                acc += r if wt == 1.0 else wt * r
        acc -= acc.max()
        np.exp(acc, out=acc)
        acc /= acc.sum()
        return acc

    def _batch_posterior_of(self, votes: Mapping[Hashable, Hashable | None]) -> np.ndarray:
        """:meth:`posterior` of a model with difficulty (a mixture over easy and hard, not a product of rows)."""
        pairs = [(w, lab) for w, lab in votes.items() if lab is not None and lab in self._cidx]
        if not pairs:
            return self.priors_.copy()
        icode, wcode, lcode, extra = self._encode_item(pairs)
        return self._batch_posterior(icode, wcode, lcode, 1, extra)[0]

    def _encode_item(self, pairs: list) -> tuple:
        """Codes ``(icode, wcode, lcode, extra)`` of one item's (worker, label) pairs (see :meth:`_encode_batch`)."""
        _, icode, wcode, lcode, extra = self._encode_batch(["i"] * len(pairs), [w for w, _ in pairs],
                                                           [lab for _, lab in pairs], grow=False)
        return icode, wcode, lcode, extra

    def _group_weights(self, groups: list) -> list[float]:
        if not len(self._rho) or len(set(groups)) == len(groups):
            return [1.0] * len(groups)
        cnt: dict = {}
        for g in groups:
            cnt[g] = cnt.get(g, 0) + 1
        return [1.0 if isinstance(g, tuple) else 1.0 / (1.0 + self._rho[g] * (cnt[g] - 1)) for g in groups]

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
        """Class posteriors (n_items, K) under the chosen candidate (over (class, difficulty) when it has
        difficulty, then summed); ``extra`` workers get the prior rows."""
        lt = self._batch_log_joint(icode, wcode, lcode, n_items, extra)
        return difficulty.classes(_em.softmax_rows(lt)[0], len(self.classes_))

    def _batch_log_joint(self, icode, wcode, lcode, n_items, extra=()) -> np.ndarray:
        """Log joint of the votes and each latent state (n_items, Z) under the chosen candidate (see
        :meth:`_batch_posterior`)."""
        K = len(self.classes_)
        log_theta = self._latent_log_theta
        code, rho = self._cluster, self._rho
        if extra:
            prior = self._prior_log_theta
            if log_theta.shape[1] != K:
                f = self._chosen_fit
                prior = np.log(np.concatenate([np.exp(prior), difficulty.temper(np.exp(prior), f.temper)]))
            log_theta = np.concatenate([log_theta, np.broadcast_to(prior, (len(extra),) + prior.shape)])
            code = np.concatenate([code, len(rho) + np.arange(len(extra))])
            rho = np.concatenate([rho, np.zeros(len(extra))])
        c = dependence.vote_weights(icode, wcode, dependence.Clusters(code, rho))
        return _em.log_joint(icode, wcode * K + lcode, c, self._latent_log_pi, log_theta, n_items)

    def predict_proba_batch(self, items, workers, labels) -> tuple[np.ndarray, np.ndarray]:
        """Posteriors for many items at once: ``(items (I,), proba (I, K))``; unknown workers use the prior, labels
        outside ``classes_`` are ignored. Does not change the model."""
        items_, icode, wcode, lcode, extra = self._encode_batch(items, workers, labels, grow=False)
        if not self.classes_:
            raise ValueError("the model has no classes yet")
        return items_, self._batch_posterior(icode, wcode, lcode, len(items_), extra)

    # ------------------------------------------------------------------ E-step statistics
    def _stats_from(self, icode, wcode, lcode, T, n_items, crit=None) -> SufficientStats:
        """Statistics of class posteriors ``T`` (n_items, K), with their hard part (:func:`.difficulty.split`)."""
        return self._stats_of(icode, wcode, lcode, *self._latent(icode, wcode, lcode, T, n_items), crit)

    def _stats_of(self, icode, wcode, lcode, Tm, Th, crit=None) -> SufficientStats:
        """Statistics of the posteriors ``_latent`` returned, with the criterion ``crit`` when given."""
        conf, class_counts, hard, hard_class = self._counts_of(icode, wcode, lcode, Tm, Th)
        total, m2, n_votes, pairs = crit if crit is not None else (None, None, 0.0, None)
        n_voted = float(np.count_nonzero(np.bincount(icode, minlength=len(Tm))))
        return SufficientStats(list(self.workers_), list(self.classes_), conf, class_counts, n_voted,
                               total, m2, n_votes, pairs, hard, hard_class)

    def _latent(self, icode, wcode, lcode, T, n_items) -> tuple[np.ndarray, np.ndarray | None]:
        """Class posteriors ``T`` (n_items, K) zeroed on items without a vote, and their hard part (None without a
        split model)."""
        K = len(self.classes_)
        Tm = T * (np.bincount(icode, minlength=n_items) > 0)[:, None]
        if self._splitter is None or not len(icode):
            return Tm, None
        c = dependence.vote_weights(icode, wcode, dependence.Clusters(self._cluster, self._rho))
        return Tm, difficulty.split(Tm, icode, wcode * K + lcode, c, self._splitter)[:, K:]

    def _counts_of(self, icode, wcode, lcode, Tm, Th) -> tuple:
        """(confusion (J, K, K), class (K,), hard confusion, hard class; zero without ``Th``) on the current layout;
        ``Tm`` and ``Th`` (n_items, K') may have fewer columns than there now are classes."""
        J, K = len(self.workers_), len(self.classes_)
        wl = wcode * K + lcode
        Tm = grown(Tm, K)
        conf = _em.confusion_counts(icode, wl, Tm, J)
        if Th is None:
            return conf, Tm.sum(axis=0), np.zeros_like(conf), np.zeros(K)
        Th = grown(Th, K)
        return conf, Tm.sum(axis=0), _em.confusion_counts(icode, wl, Th, J), Th.sum(axis=0)

    def item_stats(self, votes: Mapping[Hashable, Hashable | None],
                   posterior: np.ndarray | None = None) -> SufficientStats:
        """E-step contribution of one item (unknown workers and labels included by name); ``posterior`` (K,)
        over ``classes_`` is computed when not given. One item scores no criterion."""
        pairs = [(w, lab) for w, lab in votes.items() if lab is not None]
        if not pairs:
            return SufficientStats([], list(self.classes_))
        classes = list(self.classes_) + [c for c in dict.fromkeys(lab for _, lab in pairs) if c not in self._cidx]
        workers = list(dict.fromkeys(w for w, _ in pairs))
        p = self.posterior(votes) if posterior is None else np.asarray(posterior, dtype=float)
        T = np.zeros(len(classes))
        T[: len(p)] = p
        cid = {c: k for k, c in enumerate(classes)}
        wid = {w: j for j, w in enumerate(workers)}
        conf = np.zeros((len(workers), len(classes), len(classes)))
        for w, lab in pairs:
            conf[wid[w], :, cid[lab]] += T
        hard_share = self._hard_share(pairs, T) if len(classes) == len(self.classes_) else np.zeros(len(classes))
        hard = conf * hard_share[None, :, None]
        return SufficientStats(workers, classes, conf, T, 1.0, hard_confusion=hard, hard_class_counts=T * hard_share)

    def _hard_share(self, pairs: list, T: np.ndarray) -> np.ndarray:
        """P(hard | class, the item's votes) (K,) under the split model (zero when there is none)."""
        K = len(self.classes_)
        if self._splitter is None:
            return np.zeros(K)
        icode, wcode, lcode, extra = self._encode_item(pairs)
        if extra or not len(icode):
            return np.zeros(K)
        c = dependence.vote_weights(icode, wcode, dependence.Clusters(self._cluster, self._rho))
        split = difficulty.split(np.ones((1, K)), icode, wcode * K + lcode, c, self._splitter)[0]
        return split[K:]

    def gold_stats(self, items: Iterable[tuple[Mapping[Hashable, Hashable | None], Hashable]]) -> SufficientStats:
        """Statistics of gold-labelled items (posterior clamped to the gold class), laid out on ``classes_``
        first; see :func:`clamped_stats`. Does not change the model: ``apply`` the result to learn from it."""
        return clamped_stats(items, self.classes_)
