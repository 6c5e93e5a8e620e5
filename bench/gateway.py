"""Gateway overhead: raw aiohttp request rate (ceiling) vs the gateway's call rate, same simulator.

The simulator (5 models, 0 ms latency, no faults) runs in a separate process so client and server each
get a core. Raw: a minimal aiohttp client (the gateway's own session) POSTing the same prebuilt chat
requests the gateway sends, from CONCURRENCY x 5 workers. Gateway: CONCURRENCY workers calling
Gateway.label (5 models per product) with all machinery on (slots, breaker, retries, deadline,
parsing, votes; no cache, so every call is real HTTP). Both have CONCURRENCY x 5 requests in flight.

The machine is shared, so the two are measured in ROUNDS alternating rounds (raw, gateway, raw, ...)
against the same simulator process and the medians are compared; client CPU per call (process time of
this process / calls) is printed too, as it is less sensitive to other load than the rates.
Last line: gateway_vs_raw_aiohttp=<median gateway calls/s / median raw requests/s>.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import socket
import statistics
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
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3


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




def _session() -> aiohttp.ClientSession:
    # the gateway's own session settings (Gateway.start), so both clients do the same HTTP work
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300),
                                 skip_auto_headers=("User-Agent",))


async def _workers(n: int, items: list, work) -> None:
    """``n`` workers taking items in order: at most ``n`` in flight, no queue of pending tasks."""
    it = iter(items)

    async def worker():
        for item in it:
            await work(item)
    await asyncio.gather(*(worker() for _ in range(n)))


async def raw_rate(url: str, bodies: list[bytes], s: aiohttp.ClientSession) -> tuple[float, float]:
    """(requests/s, client CPU us per request): CONCURRENCY x 5 requests in flight."""
    headers = {"Content-Type": "application/json"}
    post_url = url + "/chat/completions"

    async def one(b: bytes):
        async with s.post(post_url, data=b, headers=headers) as r:
            await r.read()
    await _workers(CONCURRENCY * 5, bodies[:1000], one)  # warm-up
    c0, t0 = time.process_time(), time.perf_counter()
    await _workers(CONCURRENCY * 5, bodies, one)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    return len(bodies) / dt, cpu / len(bodies) * 1e6


async def gateway_rate(gw: Gateway, prods: list[ProductUpdate]) -> tuple[float, float, float]:
    """(LLM calls/s, votes/s, client CPU us per call): CONCURRENCY products x 5 models in flight."""
    votes = 0

    async def one(p):
        nonlocal votes
        n = len(await gw.label(p, ATTRS))  # not `votes += len(await ...)`: that reads votes before the await
        votes += n
    await _workers(CONCURRENCY, prods[:200], one)  # warm-up
    votes = 0
    c0, t0 = time.process_time(), time.perf_counter()
    await _workers(CONCURRENCY, prods, one)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    calls = len(prods) * 5
    return calls / dt, votes / dt, cpu / calls * 1e6


async def main(url: str) -> None:
    schema = AttributeSchema.load()
    prods = products()
    eps = endpoints_for(sim_config(), url, max_concurrency=CONCURRENCY * 2, timeout_s=10)
    bodies = [orjson.dumps(PROVIDERS[ep.provider].body(ep, build_prompt(p, [schema[a] for a in ATTRS], ep.prompt)))
              for p in prods for ep in eps]
    raws, gws = [], []
    async with _session() as s, Gateway(eps, schema, session=s) as gw:
        for r in range(ROUNDS):
            raw, raw_cpu = await raw_rate(url, bodies, s)
            raws.append(raw)
            print(f"round {r + 1} raw aiohttp: {raw:,.0f} requests/s, client CPU {raw_cpu:.0f} us/request "
                  f"({len(bodies)} requests, {CONCURRENCY * 5} in flight)", flush=True)
            calls, votes, gw_cpu = await gateway_rate(gw, prods)
            gws.append(calls)
            print(f"round {r + 1} gateway: {calls:,.0f} LLM calls/s = {votes:,.0f} votes/s "
                  f"({len(ATTRS)} attributes per call), client CPU {gw_cpu:.0f} us/call "
                  f"(+{gw_cpu - raw_cpu:.0f} us over raw)", flush=True)
        c = gw.counters()
    print(f"(successes, failures) per endpoint: { {n: (k.successes, k.failures) for n, k in c.items()} }")
    raw_med, gw_med = statistics.median(raws), statistics.median(gws)
    print(f"medians over {ROUNDS} alternating rounds (shared machine: single rounds are noisy): "
          f"raw {raw_med:,.0f} requests/s, gateway {gw_med:,.0f} calls/s")
    print(f"gateway_vs_raw_aiohttp={gw_med / raw_med:.3f}")


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
        print(f"event loop: {loop_name}; products: {N_PRODUCTS}; models: 5; simulator in a separate process; "
              f"{ROUNDS} alternating rounds raw/gateway (the machine is shared with other runs; medians compared)")
        asyncio.run(main(url))
    finally:
        proc.terminate()
        proc.join(5)
