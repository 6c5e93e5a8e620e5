"""Helpers shared by the llm tests."""

from __future__ import annotations

from llmens_core.events import ProductUpdate
from llmens_core.llm.simulator import SimConfig


def to_update(p: dict, version: int = 1) -> ProductUpdate:
    return ProductUpdate(product_id=p["product_id"], version=version, title=p["title"],
                         description=p.get("description"), category=p.get("category"))


def sim_config(*models: dict, **kw) -> SimConfig:
    """A simulator config without latency or faults unless given."""
    return SimConfig.model_validate({"mode": "confusion", "seed": 3, "models": list(models),
                                     "defaults": {"latency_ms": {"mean": 0}, "faults": {}}, **kw})
