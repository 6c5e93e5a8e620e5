"""Shared fixtures: one embedded Kafka-protocol broker (Tansu) per test session, topics named per test."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
DEMO_PRODUCTS = REPO / "llmens_core" / "data" / "demo_products.jsonl"


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test with the reason when that folder is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the team's ../shared/data development set), absent in this clone")
    return path


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    """A real Tansu broker on a free 127.0.0.1 port for the whole session; its log is printed on failure."""
    from streams.embedded import EmbeddedBroker

    b = EmbeddedBroker(log_dir=tmp_path_factory.mktemp("tansu"))
    b.start()
    yield b
    b.stop()


@pytest.fixture
def topic_prefix(request) -> str:
    """A topic prefix unique to this test, so tests sharing the session broker never collide."""
    name = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name)[:40].strip("-")
    return f"t-{name}-{uuid.uuid4().hex[:6]}."


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and "broker" in getattr(item, "fixturenames", ()):
        b = item.funcargs.get("broker")
        if b is not None:
            rep.sections.append(("embedded broker log (tail)", b.tail_log()))
