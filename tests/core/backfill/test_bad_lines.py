"""Bad lines in a batch's results (errored, missing, unreadable) are asked again in a later batch, then dead."""

from __future__ import annotations

import orjson
import pytest
from anthropic.types.messages import MessageBatchIndividualResponse
from backfill_kit import endpoint, sim_config
from hypothesis import given, settings
from hypothesis import strategies as st

from llmens_core.backfill import BackfillOptions, BackfillState, plan_requests, run_batches
from llmens_core.backfill.apis import LineResult, OpenAIBatchApi, _jsonl
from llmens_core.backfill.results import read_line

OPTS = BackfillOptions(batch_size=10, poll_s=0.05, max_tries=3)


async def run(eps, products, schema, tmp_path, opts=OPTS):
    reqs, _ = plan_requests(products, eps, schema)
    state = BackfillState.load(tmp_path / "state")
    return reqs, state, await run_batches(eps, reqs, state, opts)


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_errored_and_missing_lines_are_asked_again_until_answered(provider, sim, schema, products, tmp_path):
    base, store = await sim(sim_config({"sim-large": {"http_500": 0.3, "batch_missing": 0.2}}))
    eps = [endpoint("sim-large", provider, base, )]
    reqs, state, end = await run(eps, products, schema, tmp_path, BackfillOptions(batch_size=10, poll_s=0.05,
                                                                                      max_tries=20))
    assert (end.answered, end.dead) == (15, 0)
    retried = {cid for cid, n in state.tries.items() if n > 0}
    assert retried, "with 30% errored and 20% missing lines some request must have been asked again"
    assert all(store.asked[cid] == state.tries[cid] + 1 for cid in retried)
    assert all(store.asked[r.custom_id] == 1 for r in reqs if r.custom_id not in retried)
    reasons = {r.split(":")[0] for b in state.batches.values() for r in b["failed"].values()}
    assert reasons == {"errored", "missing"}
    if provider == "anthropic":  # an errored line is one the SDK reads as errored
        errored = [MessageBatchIndividualResponse.model_validate_json(x) for b in store.batches.values()
                   for x in b.results]
        assert {e.result.type for e in errored} == {"succeeded", "errored"}
    assert len({orjson.loads(v)["product_id"] for v in state.vote_lines()}) == 15


@pytest.mark.parametrize(("faults", "reason"), [({"http_500": 1.0}, "errored: http_500"),
                                                ({"batch_missing": 1.0}, "missing"),
                                                ({"malformed": 1.0}, "malformed")])
async def test_a_line_that_keeps_failing_is_dead_after_max_tries_with_its_reason(
        faults, reason, sim, schema, products, tmp_path):
    base, store = await sim(sim_config({"sim-small": faults}))
    eps = [endpoint("sim-large", "openai", base), endpoint("sim-small", "openai", base)]
    reqs, state, end = await run(eps, products, schema, tmp_path)
    small = [r.custom_id for r in reqs if r.llm == "sim-small"]
    assert (end.answered, end.dead) == (15, 15)
    assert sorted(state.dead) == sorted(small)
    assert all(state.dead[c].startswith(reason) and "after 3 tries" in state.dead[c] for c in small)
    assert all(store.asked[c] == 3 for c in small)  # asked max_tries times, then never again
    billed = state.usage()["sim-small"]["cost_usd"]
    assert (billed > 0) == (reason == "malformed")  # a malformed answer was paid for; an errored line was not


def test_unreadable_lines_are_failures_not_votes(schema, products):
    ep = endpoint("m", "openai", "http://127.0.0.1:9/v1")
    (req,), _ = plan_requests(products[:1], [ep], schema)
    assert read_line(ep, req, None).failure.startswith("missing")
    assert read_line(ep, req, LineResult(req.custom_id, error="http_500: boom")).failure.startswith("errored")
    assert read_line(ep, req, LineResult(req.custom_id, data={"nope": 1})).failure.startswith("bad_response")
    refused = {"choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": None,
                                                                            "refusal": "no"}}],
               "usage": {"prompt_tokens": 100, "completion_tokens": 4}}
    out = read_line(ep, req, LineResult(req.custom_id, data=refused))
    assert out.declined == "refusal" and all(v.label is None and v.raw == "declined:refusal" for v in out.votes)
    assert out.cost_usd == pytest.approx(0.5 * (0.1 * 1.0 + 0.004 * 2.0))  # a refusal abstains and is billed once


_json = st.recursive(st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                     max_leaves=12)
_lineish = st.fixed_dictionaries({"custom_id": st.just("c1")}, optional={
    "response": _json | st.fixed_dictionaries({"status_code": st.sampled_from([200, 500]), "body": _json}),
    "error": _json, "result": _json | st.fixed_dictionaries({"type": st.sampled_from(["succeeded", "errored"]),
                                                           "message": _json, "error": _json})})


@settings(max_examples=80, deadline=None)
@given(raw=st.lists(_lineish, max_size=4), junk=st.binary(max_size=40))
def test_any_result_file_reads_as_line_results_or_nothing_never_an_exception(raw, junk, schema, products):
    """Whatever a provider's result file holds, each line is a LineResult, and reading it gives votes or a
    failure reason (asked again), never an exception."""
    data = b"\n".join(orjson.dumps(x) for x in raw) + b"\n" + junk
    ep = endpoint("m", "openai", "http://127.0.0.1:9/v1")
    (req,), _ = plan_requests(products[:1], [ep], schema)
    for x in _jsonl(data):
        if isinstance(x, dict) and isinstance(x.get("custom_id"), str):
            line = OpenAIBatchApi._line(x)
            out = read_line(ep, req, line)
            assert (out.votes is None) == (out.failure is not None)


async def test_a_batch_the_provider_no_longer_knows_is_asked_again(sim, schema, products, tmp_path):
    base, store = await sim(sim_config())
    eps = [endpoint("sim-large", "openai", base)]
    reqs, _ = plan_requests(products[:3], eps, schema)
    state = BackfillState.load(tmp_path / "state")
    state.submitted("batch_gone", "sim-large", [r.custom_id for r in reqs])  # e.g. deleted at the provider
    end = await run_batches(eps, reqs, state, OPTS)
    assert (end.answered, end.dead) == (3, 0)
    assert all("could not be polled" in why for why in state.batches["batch_gone"]["failed"].values())
    assert all(store.asked[r.custom_id] == 1 for r in reqs) and state.tries == {r.custom_id: 1 for r in reqs}
