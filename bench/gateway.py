"""Gateway overhead: raw aiohttp request rate (ceiling) vs the gateway's call rate, same simulator.

The simulator (5 models, 0 ms latency, no faults) runs in a separate process so client and server each
get a core. Raw: a minimal aiohttp client POSTing the same prebuilt chat request. Gateway: Gateway.label
for every product x 5 models with all machinery on (semaphores, breaker, retries, parsing, votes;
no cache, so every call is real HTTP). Last line: gateway_vs_raw_aiohttp=<calls/s ratio>.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import socket
import sys
import time
from importlib import resources

import aiohttp
import orjson

from llmens_core.events import ProductUpdate
from llmens_core.llm.gateway import Gateway
from llmens_core.llm.prompts import build_prompt
from llmens_core.llm.providers import PROVIDERS
from llmens_core.llm.simulator import SimConfig, endpoints_for, start_simulator
from llmens_core.schema import AttributeSchema

N_PRODUCTS = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
CONCURRENCY = 64  # products in flight (x5 models = requests in flight)


def sim_config() -> SimConfig:
    return SimConfig.model_validate({
        "mode": "confusion", "seed": 1, "defaults": {"latency_ms": {"mean": 0}, "faults": {}},
        "models": [{"name": f"m{i}", "accuracy": 0.6 + 0.08 * i} for i in range(5)]})


def _install_uvloop() -> str:
    try:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        return "uvloop"
    except ImportError:
        return "asyncio"


def _serve(port: int) -> None:
    _install_uvloop()

    async def main():
        await start_simulator(sim_config(), port=port)
        await asyncio.Event().wait()

    asyncio.run(main())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def products() -> list[ProductUpdate]:
    data = resources.files("llmens_core.data").joinpath("demo_products.jsonl").read_bytes()
    rows = [orjson.loads(x) for x in data.splitlines() if x.strip()]
    return [ProductUpdate(product_id=f"{r['product_id']}-{i}", version=1, title=r["title"],
                          description=r.get("description"), category=r.get("category"))
            for i, r in ((i, rows[i % len(rows)]) for i in range(N_PRODUCTS))]


ATTRS = ["gender", "color_family", "material"]


async def raw_rate(url: str, prods: list[ProductUpdate], schema: AttributeSchema) -> float:
    eps = endpoints_for(sim_config(), url)
    oa = PROVIDERS["openai"]
    bodies = [orjson.dumps(oa.body(ep, build_prompt(p, [schema[a] for a in ATTRS]))) for p in prods for ep in eps]
    sem = asyncio.Semaphore(CONCURRENCY * 5)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        async def one(b: bytes):
            async with sem, s.post(url + "/chat/completions", data=b,
                                   headers={"Content-Type": "application/json"}) as r:
                await r.read()
        await asyncio.gather(*(one(b) for b in bodies[:200]))  # warm-up
        t0 = time.perf_counter()
        await asyncio.gather(*(one(b) for b in bodies))
        return len(bodies) / (time.perf_counter() - t0)


async def gateway_rate(url: str, prods: list[ProductUpdate], schema: AttributeSchema) -> tuple[float, float, dict]:
    eps = endpoints_for(sim_config(), url, max_concurrency=CONCURRENCY * 2, timeout_s=10)
    async with Gateway(eps, schema) as gw:
        sem = asyncio.Semaphore(CONCURRENCY)

        async def one(p):
            async with sem:
                return len(await gw.label(p, ATTRS))
        await asyncio.gather(*(one(p) for p in prods[:40]))  # warm-up
        t0 = time.perf_counter()
        votes = sum(await asyncio.gather(*(one(p) for p in prods)))
        dt = time.perf_counter() - t0
        c = gw.counters()
    return len(prods) * 5 / dt, votes / dt, {n: (k.successes, k.failures) for n, k in c.items()}


async def main(url: str) -> None:
    schema = AttributeSchema.load()
    prods = products()
    raw = await raw_rate(url, prods, schema)
    print(f"raw aiohttp: {raw:,.0f} requests/s ({len(prods) * 5} requests, {CONCURRENCY * 5} in flight)")
    calls, votes, c = await gateway_rate(url, prods, schema)
    print(f"gateway: {calls:,.0f} LLM calls/s = {votes:,.0f} votes/s ({len(ATTRS)} attributes per call); "
          f"(successes, failures) per endpoint: {c}")
    print(f"gateway_vs_raw_aiohttp={calls / raw:.3f}")


if __name__ == "__main__":
    port = _free_port()
    proc = mp.get_context("spawn").Process(target=_serve, args=(port,), daemon=True)
    proc.start()
    try:
        url = f"http://127.0.0.1:{port}/v1"
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.1)
        loop_name = _install_uvloop()
        print(f"event loop: {loop_name}; products: {N_PRODUCTS}; models: 5; simulator in a separate process")
        asyncio.run(main(url))
    finally:
        proc.terminate()
        proc.join(5)
