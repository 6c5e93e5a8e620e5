from __future__ import annotations

from importlib import resources

import orjson
import pytest

from llmens_core.llm.simulator import SIM_KEY, start_simulator
from llmens_core.schema import AttributeSchema


@pytest.fixture(scope="session")
def schema() -> AttributeSchema:
    return AttributeSchema.load()


@pytest.fixture(scope="session")
def demo_products() -> list[dict]:
    data = resources.files("llmens_core.data").joinpath("demo_products.jsonl").read_bytes()
    return [orjson.loads(line) for line in data.splitlines() if line.strip()]


@pytest.fixture
async def sim():
    """Start simulators on free ports; yields a starter returning (base_url, simulator)."""
    runners = []

    async def start(config):
        runner, port = await start_simulator(config)
        runners.append(runner)
        return f"http://127.0.0.1:{port}/v1", runner.app[SIM_KEY]

    yield start
    for r in runners:
        await r.cleanup()
