"""What a backfill has done, on disk, so that a crash and a rerun neither lose nor repeat a request.

``DIR/state.json`` (rewritten atomically: written aside, fsynced, renamed) holds every batch submitted, with
its LLM and the custom ids it covers (and, just before a batch is submitted, its key under ``pending``: a rerun
asks the provider for a batch with that key before submitting the ids again); once its results are read, the ids that got an answer (``ok``), its
tokens and cost. The votes of a collected batch are in ``DIR/votes/<batch id>.jsonl`` (also written aside and
renamed, before the batch is marked collected). A rerun polls the batches still open instead of submitting
them again, and never asks again an id whose batch was collected with it in ``ok``. ``tries`` counts the failed
lines of each id, ``dead`` the ids given up on (with the reason), ``published`` that the outputs were sent.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

__all__ = ["BackfillState"]


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` so that a reader (or a crash) sees the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass
class BackfillState:
    """The backfill's state in ``directory`` (see the module docstring)."""

    directory: Path
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    tries: dict[str, int] = field(default_factory=dict)
    dead: dict[str, str] = field(default_factory=dict)
    published: bool = False
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Batches about to be submitted, by key (saved before the provider is asked, removed once its id is saved)."""

    @classmethod
    def load(cls, directory: str | Path) -> BackfillState:
        d = Path(directory)
        (d / "votes").mkdir(parents=True, exist_ok=True)
        path = d / "state.json"
        if not path.exists():
            return cls(d)
        raw = orjson.loads(path.read_bytes())
        return cls(d, raw.get("batches", {}), raw.get("tries", {}), raw.get("dead", {}), raw.get("published", False),
                   raw.get("pending", {}))

    def save(self) -> None:
        write_atomic(self.directory / "state.json", orjson.dumps(
            {"batches": self.batches, "tries": self.tries, "dead": self.dead, "published": self.published,
             "pending": self.pending},
            option=orjson.OPT_INDENT_2))

    # -- what is known --------------------------------------------------------------------------
    def answered(self) -> set[str]:
        """Ids whose batch was collected with an answer for them: never asked again."""
        return {cid for b in self.batches.values() if b.get("collected") for cid in b.get("ok", ())}

    def in_flight(self) -> set[str]:
        """Ids in a submitted batch not collected yet: polled, not submitted again."""
        return {cid for b in self.batches.values() if not b.get("collected") for cid in b["ids"]}

    def submitting(self, key: str, llm: str, ids: list[str]) -> None:
        """About to submit ``ids`` as the batch ``key`` (found again by its key if the process dies meanwhile)."""
        self.pending[key] = {"llm": llm, "ids": ids}
        self.save()

    def open_batches(self) -> dict[str, dict[str, Any]]:
        return {bid: b for bid, b in self.batches.items() if not b.get("collected")}

    # -- changes (each saved at once) -----------------------------------------------------------
    def submitted(self, batch_id: str, llm: str, ids: list[str], key: str | None = None) -> None:
        self.batches[batch_id] = {"llm": llm, "ids": ids, "collected": False}
        if key is not None:
            self.pending.pop(key, None)
        self.save()

    def not_submitted(self, key: str) -> None:
        """The provider has no batch ``key``: its ids are asked again."""
        self.pending.pop(key, None)
        self.save()

    def collected(self, batch_id: str, ok: list[str], votes: list[bytes], usage: dict[str, float],
                  failed: dict[str, str], max_tries: int) -> list[str]:
        """Record a batch's results; ``failed`` ids count a try and are dead at ``max_tries``. Returns the new dead."""
        write_atomic(self.directory / "votes" / f"{batch_id}.jsonl", b"".join(v + b"\n" for v in votes))
        newly_dead = []
        for cid, reason in failed.items():
            self.tries[cid] = self.tries.get(cid, 0) + 1
            if self.tries[cid] >= max_tries:
                self.dead[cid] = f"{reason} (after {self.tries[cid]} tries)"
                newly_dead.append(cid)
        self.batches[batch_id].update(collected=True, ok=ok, failed=failed, **usage)
        self.save()
        return newly_dead

    def vote_lines(self) -> list[bytes]:
        """Every vote of every collected batch (LabelVote JSON lines)."""
        out: list[bytes] = []
        for bid, b in self.batches.items():
            path = self.directory / "votes" / f"{bid}.jsonl"
            if b.get("collected") and path.exists():
                out += [x for x in path.read_bytes().splitlines() if x.strip()]
        return out

    def usage(self) -> dict[str, dict[str, float]]:
        """Per LLM: requests, tokens in/out and dollars of the collected batches (this run and earlier ones)."""
        out: dict[str, dict[str, float]] = {}
        for b in self.batches.values():
            if b.get("collected"):
                u = out.setdefault(b["llm"], {"requests": 0.0, "tokens_in": 0.0, "tokens_out": 0.0, "cost_usd": 0.0})
                for k in u:
                    u[k] += float(b.get(k, 0.0))
        return out
