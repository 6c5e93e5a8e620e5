from __future__ import annotations

from importlib import resources

import orjson
import pytest

from llmens_core.events import ProductUpdate
from llmens_core.llm.simulator import SimConfig, start_simulator
from llmens_core.schema import AttributeSchema


@pytest.fixture(scope="session")
def schema() -> AttributeSchema:
    return AttributeSchema.load()


@pytest.fixture(scope="session")
def demo_products() -> list[dict]:
    data = resources.files("llmens_core.data").joinpath("demo_products.jsonl").read_bytes()
    return [orjson.loads(line) for line in data.splitlines() if line.strip()]


def to_update(p: dict, version: int = 1) -> ProductUpdate:
    return ProductUpdate(product_id=p["product_id"], version=version, title=p["title"],
                         description=p.get("description"), category=p.get("category"))


def sim_config(*models: dict, **kw) -> SimConfig:
    """A simulator config without latency or faults unless given."""
    return SimConfig.model_validate({"mode": "confusion", "seed": 3, "models": list(models),
                                     "defaults": {"latency_ms": {"mean": 0}, "faults": {}}, **kw})


@pytest.fixture
async def sim():
    """Start simulators on free ports; yields a starter returning (base_url, simulator)."""
    runners = []

    async def start(config):
        runner, port = await start_simulator(config)
        runners.append(runner)
        return f"http://127.0.0.1:{port}/v1", runner.app["sim"]

    yield start
    for r in runners:
        await r.cleanup()
