"""Fixtures of the backfill tests: the attribute schema, demo products and simulators on loopback."""

from __future__ import annotations

from importlib import resources

import orjson
import pytest

from llmens_core.events import ProductUpdate
from llmens_core.llm.sim_batch import BATCH_KEY
from llmens_core.llm.simulator import start_simulator
from llmens_core.schema import AttributeSchema


@pytest.fixture(scope="session")
def schema() -> AttributeSchema:
    return AttributeSchema.load()


@pytest.fixture(scope="session")
def products() -> list[ProductUpdate]:
    data = resources.files("llmens_core.data").joinpath("demo_products.jsonl").read_bytes()
    return [ProductUpdate.model_validate({**orjson.loads(x), "version": 1}) for x in data.splitlines()[:15]]


@pytest.fixture
async def sim():
    """Start simulators on free ports; yields a starter returning (base_url, batch store)."""
    runners = []

    async def start(config):
        runner, port = await start_simulator(config)
        runners.append(runner)
        return f"http://127.0.0.1:{port}/v1", runner.app[BATCH_KEY]

    yield start
    for r in runners:
        await r.cleanup()
