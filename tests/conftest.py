"""Shared fixtures: one real broker (Apache Kafka, or Tansu without Java) per test session, topics named per test."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import pytest
from hypothesis import settings

# Property tests draw the same examples on every run (`make test`, CI): a rare counterexample found at random
# must become a fixed, reproducible test, not a failure of whichever submission meets it. To explore new
# examples: LLMENS_HYPOTHESIS_PROFILE=explore make test.
settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("LLMENS_HYPOTHESIS_PROFILE", "repeatable"))

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
    """A real broker for the whole session, shared by its pytest-xdist processes: Apache Kafka where Java 17+ is
    present, Tansu otherwise.

    LLMENS_TEST_BROKER=kafka|tansu forces one. Its log is printed on failure.
    """
    from streams.harness.brokers.choice import start_local_broker
    from tests.shared_broker import shared_broker

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # pytest-xdist: one folder per process
    with shared_broker(root, lambda log_dir: start_local_broker(log_dir, prefer=os.environ.get("LLMENS_TEST_BROKER"))
                       ) as b:
        yield b


def pytest_report_header(config) -> str:
    """Say which broker the broker tests will run on (the same rule as the ``broker`` fixture)."""
    from streams.harness.brokers.choice import local_broker_kind
    from streams.harness.brokers.kafka import pinned_version

    if local_broker_kind(os.environ.get("LLMENS_TEST_BROKER")) == "kafka":
        return f"broker: Apache Kafka {pinned_version()} (KRaft, single node; LLMENS_TEST_BROKER=tansu for Tansu)"
    return "broker: Tansu (embedded; no Java 17+ on PATH)"


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
            rep.sections.append((f"{b.name} broker log (tail)", b.tail_log()))


@pytest.hookimpl(tryfirst=True)  # before the mark plugin deselects by -m
def pytest_collection_modifyitems(config, items) -> None:
    """Mark every test of the session broker ``integration``: ``make test`` runs ``-m integration`` (one broker)
    and ``-m "not integration"`` as two sessions side by side, and a test must not land in the one without it."""
    for item in items:
        if "broker" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)
