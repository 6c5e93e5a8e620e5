"""Helpers of the backfill tests: simulator configs and endpoints of simulated models."""

from __future__ import annotations

from llmens_core.llm.config import EndpointConfig
from llmens_core.llm.simulator import load_sim_config

NO_FAULTS = {"http_429": 0, "http_500": 0, "malformed": 0, "out_of_schema": 0}


def sim_config(models: dict[str, dict] | None = None, **faults) -> dict:
    """The built-in models with no latency and no faults (``faults``: for all; ``models``: per model)."""
    cfg = load_sim_config(None).model_dump(mode="json")
    cfg["batch_seconds"] = 0.1
    cfg["defaults"] = {"latency_ms": {"mean": 0, "p99": 0}, "faults": {**NO_FAULTS, **faults}}
    for m in cfg["models"]:
        m["latency_ms"] = None
        m["faults"] = {**NO_FAULTS, **(models or {}).get(m["name"], {})} if m["name"] in (models or {}) else None
    return cfg


def endpoint(name: str, provider: str, base: str, **kw) -> EndpointConfig:
    """An endpoint of the simulated model ``name`` through ``provider``'s API ($1/$2 per 1k tokens)."""
    knobs = {} if provider == "anthropic" else {"temperature": 0.0}
    url = base + "beta" if provider == "gemini" else base
    return EndpointConfig(name=name, provider=provider, base_url=url, model=name, price_in_per_1k=1.0,
                          price_out_per_1k=2.0, **knobs, **kw)
