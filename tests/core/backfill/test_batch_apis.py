"""Backfill through each provider's batch API against the simulator on loopback, checked with the official SDKs.

For every provider: the submitted lines are the gateway's own request bodies and validate against the SDK's
request types, the batch objects and result lines the simulator serves validate against the SDK's response
types, and the votes are the ones the synchronous gateway gets for the same products from the same simulator.
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import pytest
from anthropic.types.messages import MessageBatch, MessageBatchIndividualResponse
from anthropic.types.messages.batch_create_params import Request as AnthropicBatchRequest
from google.genai import types as gtypes
from openai.types import Batch
from openai.types.chat import ChatCompletion
from openai.types.chat.completion_create_params import CompletionCreateParamsNonStreaming

from llmens_core.backfill import BackfillOptions, BackfillState, plan_requests, run_batches
from llmens_core.llm.gateway import Gateway

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "llm"))
from backfill_kit import endpoint, sim_config  # noqa: E402
from sdk_oracle import request_errors  # noqa: E402
from test_provider_oracles import GeminiGenerateContentRequest  # noqa: E402

FAST = BackfillOptions(batch_size=7, poll_s=0.05, max_tries=3)


async def backfill(eps, products, schema, tmp_path, opts=FAST):
    reqs, unasked = plan_requests(products, eps, schema)
    assert not unasked
    state = BackfillState.load(tmp_path / "state")
    end = await run_batches(eps, reqs, state, opts)
    return reqs, state, end


async def sync_votes(products, schema, base):
    """The synchronous gateway's labels for the same models (the simulator's chat API speaks OpenAI)."""
    eps = [endpoint(n, "openai", base) for n in ("sim-large", "sim-small")]
    out = {}
    async with Gateway(eps, schema) as gw:
        for p in products:
            for v in await gw.label(p, schema.requested(p.attributes, p.category)[0]):
                out[(v.product_id, v.attribute, v.llm)] = v.label
    return out


def batch_votes(state):
    return {(v["product_id"], v["attribute"], v["llm"]): v["label"] for v in map(orjson.loads, state.vote_lines())}


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_a_backfill_asks_the_gateways_requests_and_gets_the_synchronous_answers(
        provider, sim, schema, products, tmp_path):
    base, store = await sim(sim_config())
    eps = [endpoint(n, provider, base) for n in ("sim-large", "sim-small")]
    reqs, state, end = await backfill(eps, products, schema, tmp_path)
    assert (end.total, end.answered, end.dead) == (30, 30, 0)
    assert sorted(store.asked) == sorted(r.custom_id for r in reqs) and set(store.asked.values()) == {1}
    by_id = {r.custom_id: r for r in reqs}
    for b in store.batches.values():
        check_batch(provider, b, by_id, {e.name: e for e in eps})
    assert batch_votes(state) == await sync_votes(products, schema, base)
    usage = state.usage()
    for e in eps:  # list price x the batch discount, from the usage the responses reported
        u = usage[e.name]
        assert u["requests"] == 15
        assert u["cost_usd"] == pytest.approx(0.5 * (u["tokens_in"] / 1000 * 1.0 + u["tokens_out"] / 1000 * 2.0))


def check_batch(provider, b, by_id, eps):
    """The lines of one simulated batch and what it answered, against the provider's SDK."""
    if provider == "openai":
        for line in b.lines:
            assert set(line) == {"custom_id", "method", "url", "body"}  # BatchRequestInput
            assert (line["method"], line["url"]) == ("POST", "/v1/chat/completions")
            r = by_id[line["custom_id"]]
            assert line["body"] == r.body(eps[r.llm])
            assert request_errors(line["body"], CompletionCreateParamsNonStreaming) == []
        from llmens_core.llm.sim_batch import _openai_batch
        assert Batch.model_validate(_openai_batch(b)).status == "completed"
        for raw in b.results:
            out = orjson.loads(raw)
            ChatCompletion.model_validate(out["response"]["body"])
    elif provider == "anthropic":
        for item in b.lines:
            assert request_errors(item, AnthropicBatchRequest) == []
            r = by_id[item["custom_id"]]
            assert item["params"] == r.body(eps[r.llm])
        from llmens_core.llm.sim_batch import _anthropic_batch
        assert MessageBatch.model_validate(_anthropic_batch(b, "http://x")).processing_status == "ended"
        for raw in b.results:
            assert MessageBatchIndividualResponse.model_validate_json(raw).result.type == "succeeded"
    else:
        for item in b.lines:
            r = by_id[item["metadata"]["key"]]
            assert item["request"] == r.body(eps[r.llm])
            GeminiGenerateContentRequest.model_validate(item["request"])
        for raw in b.results:
            gtypes.GenerateContentResponse.model_validate(orjson.loads(raw)["response"])
