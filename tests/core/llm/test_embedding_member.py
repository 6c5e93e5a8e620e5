"""The embedding member against a real loopback HTTP server speaking the OpenAI ``/v1/embeddings`` API.

The server embeds text as bag-of-words vectors over the words it has seen (a real, deterministic embedding:
texts sharing words are similar, no collisions), so the expected votes follow from the descriptions' words.
"""

from __future__ import annotations

import re

import numpy as np
import orjson
import pytest
from aiohttp import web

from llmens_core.events import NOT_PRESENT, ProductUpdate
from llmens_core.llm.config import EndpointConfig
from llmens_core.llm.embeddings import EmbeddingIndex, classify, label_descriptions, response_vectors
from llmens_core.llm.gateway import Gateway
from llmens_core.llm.providers import PROVIDERS

DIM = 4096


def bag_of_words(text: str, vocabulary: dict[str, int]) -> list[float]:
    v = np.zeros(DIM)
    for w in re.findall(r"[a-z0-9]+", text.lower()):
        v[vocabulary.setdefault(w, len(vocabulary))] += 1.0
    return v.tolist()


@pytest.fixture
async def embeddings_server():
    """Start a /v1/embeddings server; yields (base_url, list of every request body it received)."""
    seen: list[dict] = []
    state = {"broken": False}
    vocabulary: dict[str, int] = {}

    async def embeddings(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        seen.append(body)
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"object": "embedding", "index": i, "embedding": bag_of_words(t, vocabulary)} for i, t in enumerate(texts)]
        if state["broken"]:
            data = data[:1] if len(data) > 1 else data + data  # wrong number of vectors
        data.reverse()  # servers need not keep the order: ``index`` says which input a vector is
        return web.json_response({"object": "list", "data": data, "model": body.get("model"),
                                  "usage": {"prompt_tokens": 7 * len(texts), "total_tokens": 7 * len(texts)}})

    app = web.Application()
    app.router.add_post("/v1/embeddings", embeddings)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/v1", seen, state
    await runner.cleanup()


def _product(pid: str, title: str, attrs: list[str]) -> ProductUpdate:
    return ProductUpdate(product_id=pid, version=1, title=title, attributes=attrs)


async def test_votes_follow_similarity_and_label_vectors_are_embedded_once(embeddings_server, schema):
    url, seen, _ = embeddings_server
    ep = EndpointConfig(name="emb", provider="openai_embeddings", base_url=url, model="bow", max_retries=0)
    assert ep.prompt == "embedding"
    PROVIDERS["openai_embeddings"].index = EmbeddingIndex()  # a fresh index for this server
    async with Gateway([ep], schema) as gw:
        v1 = await gw.label(_product("p1", "Ladies leather handbag", ["gender", "material"]), ["gender", "material"])
        v2 = await gw.label(_product("p2", "Steel water bottle for men", ["gender", "material"]),
                            ["gender", "material"])
        v3 = await gw.label(_product("p3", "Paper notebook", ["material"]), ["material"])
    assert {v.attribute: v.label for v in v1} == {"gender": "female", "material": "leather"}
    assert {v.attribute: v.label for v in v2} == {"gender": "male", "material": "metal"}
    assert [v.label for v in v3] == ["paper"]
    assert all(v.error is None and v.llm == "emb" for v in v1 + v2 + v3)
    n_descriptions = len(label_descriptions(schema["gender"])) + len(label_descriptions(schema["material"]))
    # first request: the product text + every description; later: the product text alone
    assert seen[0]["input"][0] == "Ladies leather handbag" and len(seen[0]["input"]) == 1 + n_descriptions
    assert [len(b["input"]) for b in seen[1:]] == [1, 1]
    assert seen[0]["model"] == "bow"


async def test_a_response_with_the_wrong_number_of_vectors_is_a_bad_response(embeddings_server, schema):
    url, seen, state = embeddings_server
    state["broken"] = True
    ep = EndpointConfig(name="emb", provider="openai_embeddings", base_url=url, model="bow", max_retries=1,
                        backoff_base_s=0.0)
    PROVIDERS["openai_embeddings"].index = EmbeddingIndex()
    async with Gateway([ep], schema) as gw:
        votes = await gw.label(_product("p1", "Ladies leather handbag", ["gender"]), ["gender"])
        counters = gw.counters()["emb"]
    assert [v.label for v in votes] == [None] and votes[0].error.startswith("bad_response")
    assert counters.errors == {"bad_response": 2} and len(seen) == 2


def test_classify_picks_the_most_similar_unit_row():
    labels = np.eye(3, dtype=np.float32)
    assert classify(np.array([0.1, 2.0, 0.3]), labels, ["a", "b", "c"]) == ("b", pytest.approx(0.9879, abs=1e-3))


def test_label_descriptions_cover_every_class_with_synonyms(schema):
    d = dict(label_descriptions(schema["gender"]))
    assert list(d) == [*schema["gender"].labels, NOT_PRESENT]
    assert "women" in d["female"] and d[NOT_PRESENT] == "gender: not stated"


def test_response_vectors_orders_by_index_and_checks_the_count():
    data = {"data": [{"index": 1, "embedding": [0.0, 1.0]}, {"index": 0, "embedding": [1.0, 0.0]}]}
    assert response_vectors(data, 2).tolist() == [[1.0, 0.0], [0.0, 1.0]]
    with pytest.raises(ValueError):
        response_vectors(data, 3)


def test_the_embedding_prompt_goes_with_the_embeddings_provider_only():
    from pydantic import ValidationError

    assert EndpointConfig(name="e", provider="openai_embeddings", base_url="http://h/v1", model="m").prompt == \
        "embedding"
    with pytest.raises(ValidationError, match="prompt `embedding` goes with provider `openai_embeddings`"):
        EndpointConfig(name="e", provider="openai_embeddings", base_url="http://h/v1", model="m", prompt="default")
    with pytest.raises(ValidationError, match="prompt `embedding` goes with provider `openai_embeddings`"):
        EndpointConfig(name="e", base_url="http://h/v1", model="m", prompt="embedding")
