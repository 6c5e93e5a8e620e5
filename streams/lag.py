"""Consumer lag per group, topic and partition, with a Burrow-style status over a window of samples.

End offsets are read from a *fetch* response, not from ListOffsets. The embedded broker (Tansu 0.6) answers
ListOffsets(latest) with the base offset of the last record batch + 1, so a batch of 1,000 records reports an
end of 1. Its fetch responses carry the right high watermark. :func:`end_offsets` therefore asks ListOffsets
first, assigns one probe consumer (no group membership, no commits, ``read_uncommitted``) to every partition at
``max(reported_end - 1, low)``, polls until each partition has seen a fetch response, and takes the high
watermark librdkafka cached from it (``get_watermark_offsets(cached=True)``). On Apache Kafka both numbers agree;
the probe costs one small fetch per partition. The larger of the two is used, and a partition whose fetch did not
answer in time falls back to ListOffsets (``end_source="list_offsets"``).

Committed offsets come from OffsetFetch for the group (``AdminClient.list_consumer_group_offsets``), which works
on both brokers; group *state* is not used (Tansu reports UNKNOWN and no members).

Status rules (after Burrow's evaluator, https://github.com/linkedin/Burrow/wiki/Consumer-Lag-Evaluation-Rules),
over the samples of one partition in the window, oldest first:

1. lag is zero in any sample -> ``OK``;
2. the committed offset never moves in the window (or there is none) while lag > 0 -> ``STALLED``, or ``STOPPED``
   when no commit has moved it for ``stopped_after_s`` (measured from the last movement seen, else from the first
   sample) or the group has no commit at all for the partition. Kafka does not tell when an offset was committed,
   so "last commit" is the last time we saw the committed offset change;
3. lag grows in every step of the window (at least ``min_samples`` samples) -> ``WARNING``;
4. otherwise ``OK``. Fewer than two samples can only be judged by rule 1; with lag > 0 they are ``UNKNOWN``.
"""

from __future__ import annotations

import enum
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from streams.offsets import client_config, end_offsets

__all__ = [
    "LagMonitor",
    "LagSample",
    "PartitionLag",
    "Status",
    "committed_offsets",
    "consumer_lag",
    "end_offsets",
    "evaluate_status",
    "list_groups",
]

class Status(enum.StrEnum):
    OK = "OK"
    WARNING = "WARNING"
    STALLED = "STALLED"
    STOPPED = "STOPPED"
    UNKNOWN = "UNKNOWN"
    """Lag > 0 in the only sample: whether the group moves cannot be told from one sample."""


@dataclass(frozen=True)
class PartitionLag:
    """One partition of one topic as seen by one consumer group at ``timestamp``."""

    group: str
    topic: str
    partition: int
    committed: int | None
    """Next offset the group will read (``None``: the group has not committed this partition)."""
    end: int
    """Log end offset (high watermark)."""
    lag: int | None
    """``end - committed``; for a partition without commit, ``end - low`` (llmens reads from the earliest)."""
    low: int = 0
    end_source: str = "fetch"
    """``fetch`` (high watermark from a fetch response) or ``list_offsets`` (fallback)."""
    timestamp: float = 0.0

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.group, self.topic, self.partition)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LagSample:
    """What :func:`evaluate_status` needs from one observation."""

    timestamp: float
    committed: int | None
    lag: int | None


def _admin(bootstrap: str, extra: dict | None = None):
    from confluent_kafka.admin import AdminClient

    return AdminClient(client_config(bootstrap, extra))


def list_groups(bootstrap: str, *, timeout: float = 10.0, config: dict | None = None) -> list[str]:
    """Names of all consumer groups the cluster knows (state is not used: Tansu reports UNKNOWN)."""
    admin = _admin(bootstrap, config)  # keep a reference until the future is done (a freed client drops it)
    res = admin.list_consumer_groups(request_timeout=timeout).result(timeout=timeout)
    return sorted(g.group_id for g in res.valid)


def committed_offsets(
    bootstrap: str, group: str, *, timeout: float = 10.0, config: dict | None = None
) -> dict[tuple[str, int], int]:
    """``{(topic, partition): committed offset}`` of every partition ``group`` has committed."""
    from confluent_kafka import ConsumerGroupTopicPartitions

    admin = _admin(bootstrap, config)
    futs = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=timeout)
    out: dict[tuple[str, int], int] = {}
    for fut in futs.values():
        for tp in fut.result(timeout=timeout).topic_partitions or []:
            if tp.error is None and tp.offset >= 0:
                out[(tp.topic, tp.partition)] = tp.offset
    return out


def _topic_partitions(bootstrap: str, topics: Iterable[str], timeout: float, config: dict | None) -> dict[str, list[int]]:
    admin = _admin(bootstrap, config)
    md = admin.list_topics(timeout=timeout)
    out = {}
    for t in topics:
        tm = md.topics.get(t)
        if tm is not None and tm.error is None:
            out[t] = sorted(tm.partitions)
    return out


def consumer_lag(
    bootstrap: str,
    groups: Sequence[str] | None = None,
    topics: Sequence[str] | None = None,
    *,
    timeout: float = 10.0,
    config: dict | None = None,
) -> list[PartitionLag]:
    """Lag of ``groups`` (default: every group) on ``topics`` (default: every topic the group committed on).

    Every partition of a topic the group has committed on is reported; one without a commit has
    ``committed=None`` and ``lag = end - low``.
    """
    now = time.time()
    group_names = list(groups) if groups else list_groups(bootstrap, timeout=timeout, config=config)
    wanted = set(topics) if topics else None
    commits: dict[str, dict[tuple[str, int], int]] = {}
    for g in group_names:
        c = committed_offsets(bootstrap, g, timeout=timeout, config=config)
        commits[g] = {k: v for k, v in c.items() if wanted is None or k[0] in wanted}
    topic_names = {t for c in commits.values() for t, _ in c}
    if wanted:
        topic_names |= wanted
    layout = _topic_partitions(bootstrap, sorted(topic_names), timeout, config)
    ends = end_offsets(
        bootstrap, [(t, p) for t, ps in layout.items() for p in ps], timeout=timeout, config=config, with_source=True
    )
    rows: list[PartitionLag] = []
    for g in group_names:
        g_topics = {t for t, _ in commits[g]} | (wanted or set())
        for t in sorted(g_topics):
            for p in layout.get(t, []):
                lo, end, src = ends[(t, p)]
                committed = commits[g].get((t, p))
                lag = max(end - committed, 0) if committed is not None else max(end - lo, 0)
                rows.append(PartitionLag(g, t, p, committed, end, lag, lo, src, now))
    return rows


def evaluate_status(
    samples: Sequence[LagSample],
    *,
    now: float | None = None,
    stopped_after_s: float = 300.0,
    min_samples: int = 3,
) -> Status:
    """Burrow-style status of one partition from its samples (oldest first); see the module docstring."""
    if not samples:
        return Status.OK
    if any(s.lag == 0 for s in samples):
        return Status.OK
    if len(samples) < 2:
        return Status.UNKNOWN
    now = samples[-1].timestamp if now is None else now
    committed = [s.committed for s in samples]
    if committed[-1] is None:
        return Status.STOPPED
    if all(c == committed[0] for c in committed):
        return Status.STOPPED if now - samples[0].timestamp >= stopped_after_s else Status.STALLED
    lags = [s.lag for s in samples]
    if len(samples) >= min_samples and all(
        a is not None and b is not None and b > a for a, b in zip(lags, lags[1:], strict=False)
    ):
        return Status.WARNING
    return Status.OK


class LagMonitor:
    """Keeps a window of samples per (group, topic, partition) and judges each with :func:`evaluate_status`.

    ``stopped_after_s`` is measured from the last time the committed offset was seen to move (or from the first
    sample ever taken of the partition), so a window shorter than the threshold can still say STOPPED.
    """

    def __init__(
        self,
        bootstrap: str,
        groups: Sequence[str] | None = None,
        topics: Sequence[str] | None = None,
        *,
        window: int = 10,
        stopped_after_s: float = 300.0,
        timeout: float = 10.0,
        config: dict | None = None,
    ):
        self.bootstrap, self.groups, self.topics = bootstrap, groups, topics
        self.window, self.stopped_after_s, self.timeout, self.config = window, stopped_after_s, timeout, config
        self._samples: dict[tuple[str, str, int], deque[LagSample]] = {}
        self._last_move: dict[tuple[str, str, int], float] = {}
        self._lock = threading.Lock()

    def observe(self, rows: Iterable[PartitionLag]) -> list[tuple[PartitionLag, Status]]:
        out = []
        with self._lock:
            for r in rows:
                win = self._samples.setdefault(r.key, deque(maxlen=self.window))
                if not win or win[-1].committed != r.committed:
                    self._last_move[r.key] = r.timestamp
                win.append(LagSample(r.timestamp, r.committed, r.lag))
                status = evaluate_status(list(win), stopped_after_s=self.stopped_after_s)
                if status is Status.STALLED and r.timestamp - self._last_move[r.key] >= self.stopped_after_s:
                    status = Status.STOPPED
                out.append((r, status))
        return out

    def sample(self) -> list[tuple[PartitionLag, Status]]:
        """Take one sample of every partition and judge it."""
        return self.observe(
            consumer_lag(self.bootstrap, self.groups, self.topics, timeout=self.timeout, config=self.config)
        )
