"""The gateway's fast paths give exactly what the plain code gives (bodies, parsing, votes, slots)."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmens_core.events import LabelVote, ProductUpdate
from llmens_core.llm.client import CallFailed, EndpointClient, Slots
from llmens_core.llm.config import EndpointConfig
from llmens_core.llm.gateway import _vote
from llmens_core.llm.parsing import parse_answer, parse_answer_shared
from llmens_core.llm.prompts import build_prompt
from llmens_core.llm.providers import PROVIDERS

ATTRS = ["gender", "color_family", "material"]


@pytest.mark.parametrize("style", ["default", "ecinstruct"])
@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
@pytest.mark.parametrize("structured", [(True, "response_format"), (True, "vllm"), (True, "guided_json"),
                                        (False, "response_format")])
def test_body_bytes_is_body(schema, style, provider, structured):
    p = ProductUpdate(product_id="p", version=1, title="Men's <b>boot</b> \u2603 \"x\"", description="a\nb")
    ep = EndpointConfig(name="e", provider=provider, base_url="http://x/v1", model="m", prompt=style,
                        structured_output=structured[0], structured_style=structured[1],
                        **({} if provider == "anthropic" else {"temperature": 0.3, "seed": 5}))
    pr = build_prompt(p, [schema[a] for a in ATTRS], style)
    prov = PROVIDERS[provider]
    assert orjson.loads(prov.body_bytes(ep, pr)) == prov.body(ep, pr)
    assert orjson.loads(prov.body_bytes(ep, pr)) == prov.body(ep, pr)  # cached parts reused


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(['{"gender": "women", "color_family": "black", "material": "leather"}',
                        '{"gender": "Women", "color_family": 3}', '{"Gender": "men", "gender": "women"}',
                        '[{"attribute": "gender", "value": "None", "source": "title"}]', '{}', '{"x": {"gender": "men"}}',
                        '{"gender": ["red", "blue"]}', 'prose {"material": "silk"} more']) | st.text(max_size=80),
       st.booleans())
def test_shared_parse_equals_parse(schema, text, missing_is_none):
    attrs = [schema[a] for a in ATTRS]
    for _ in range(2):
        assert parse_answer_shared(text, attrs, missing_is_none=missing_is_none) == parse_answer(
            text, attrs, missing_is_none=missing_is_none)


def test_fast_vote_is_model_construct():
    a = _vote("p", 1, "gender", "m0", "female", "women", 0.1, 0.002)
    b = LabelVote.model_construct(product_id="p", version=1, attribute="gender", llm="m0", label="female",
                                  raw="women", latency_s=0.1, cost_usd=0.002, error=None,
                                  confidence=None)
    assert a == b and repr(a) == repr(b) and a.model_fields_set == b.model_fields_set
    assert a.to_bytes() == b.to_bytes() and LabelVote.from_bytes(a.to_bytes()) == a
    assert a.model_copy(update={"label": None}).label is None and a.label == "female"


async def test_slots_fifo_deadline_and_cancel():
    s = Slots(1)
    assert s.try_acquire() and not s.try_acquire() and s.locked()
    t0 = time.monotonic()
    assert not await s.acquire(0.05)  # timed out waiting
    assert 0.04 <= time.monotonic() - t0 < 1.0 and not s.waiters
    order = []

    async def waiter(i):
        if await s.acquire(5):
            order.append(i)
            await asyncio.sleep(0)
            s.release()
    tasks = [asyncio.create_task(waiter(i)) for i in range(3)]
    cancelled = asyncio.create_task(s.acquire(5))
    await asyncio.sleep(0.01)
    cancelled.cancel()
    await asyncio.sleep(0)
    s.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2] and s.free == 1 and not s.waiters


async def test_call_fails_with_deadline_while_waiting_for_a_slot():
    ep = EndpointConfig(name="e", base_url="http://127.0.0.1:9/v1", model="m", max_concurrency=1)
    client = EndpointClient(ep, lambda: None)
    assert client.sem.try_acquire()  # the only slot is busy
    pr = build_prompt(ProductUpdate(product_id="p", version=1, title="t"), [])
    t0 = time.monotonic()
    with pytest.raises(CallFailed) as exc:
        await client.call(pr, deadline=time.monotonic() + 0.1)
    assert exc.value.kind == "deadline" and time.monotonic() - t0 < 1.0
    assert client.counters.errors == {"deadline": 1} and client.counters.failures == 1
    assert client.counters.requests == 0 and client.breaker.state == "closed"
