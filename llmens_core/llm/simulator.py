"""A simulated OpenAI-compatible LLM server for tests, demos and benchmarks (never for production).

Serves ``POST /v1/chat/completions`` and ``GET /v1/models`` on loopback for several named models, plus
``GET /v1/sim/stats`` (per-model request and outcome counts). It reads the llmens prompt formats
(``default`` and ``ecinstruct``): the allowed labels from the "Allowed labels/values:" line and the
product from the fenced data block.

Modes:

* ``confusion``: each model answers from the gold labels of a products JSONL (gold looked up by the
  product title in the prompt; ``null`` gold = ``"none"``) through its own confusion structure
  (accuracy, ``none_bias``, ``class_bias``, explicit ``confusions`` rows, ``drift``). Answers are a
  deterministic function of (seed, model, title, attribute): redeliveries get the same answer.
* ``replay``: answers with recorded outputs of a predictions JSONL, one model per recorded ``model``
  (``value`` null -> ``"none"``; a recorded attribute-less answer is left out).

Per model: lognormal latency (mean/p99 ms), faults (429 with Retry-After, 500, hang past the client's
timeout, malformed JSON, out-of-schema values; and the answers a real provider gives instead of one: a refusal
(``message.refusal``), a content filter (``finish_reason: content_filter``), a cut-off at ``max_tokens``
(``finish_reason: length``, half an answer), each billed), 429 bursts, ``obedient`` (follows instructions found in
the product text, for injection tests) and ``chatty`` (prose and code fences around the JSON).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import orjson
import yaml
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from llmens_core.llm.config import EndpointConfig
from llmens_core.llm.prompts import DATA_BEGIN, DATA_END

__all__ = [
    "SimConfig",
    "SimError",
    "SimModel",
    "SimReply",
    "Simulator",
    "default_sim_config",
    "endpoints_for",
    "load_sim_config",
    "start_simulator",
]

NONE = "none"
SIM_KEY: web.AppKey[Simulator] = web.AppKey("sim")


class Latency(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mean: float = Field(0.0, ge=0)
    p99: float = Field(0.0, ge=0)


class Faults(BaseModel):
    model_config = ConfigDict(extra="forbid")
    http_429: float = Field(0.0, ge=0, le=1)
    http_500: float = Field(0.0, ge=0, le=1)
    hang: float = Field(0.0, ge=0, le=1)
    malformed: float = Field(0.0, ge=0, le=1)
    out_of_schema: float = Field(0.0, ge=0, le=1)
    refusal: float = Field(0.0, ge=0, le=1)
    content_filter: float = Field(0.0, ge=0, le=1)
    length: float = Field(0.0, ge=0, le=1)
    retry_after_s: float = Field(1.0, ge=0)
    retry_after_http_date: bool = False
    hang_s: float = Field(60.0, ge=0)
    batch_missing: float = Field(0.0, ge=0, le=1, description="a batch line left out of the batch's results")


class Burst429(BaseModel):
    """Requests number ``start + i*every ... + length - 1`` of a model get 429 (``every`` 0 = once).

    ``status`` 500 or 503 makes the burst an outage instead (no Retry-After; circuit breakers count it).
    """

    model_config = ConfigDict(extra="forbid")
    status: Literal[429, 500, 503] = 429
    start: int = Field(0, ge=0)
    every: int = Field(0, ge=0)
    length: int = Field(1, ge=1)
    retry_after_s: float = Field(1.0, ge=0)


class Drift(BaseModel):
    model_config = ConfigDict(extra="forbid")
    after: int = Field(ge=0, description="requests served before the accuracy changes")
    accuracy: float = Field(ge=0, le=1)


class SimModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    family: str | None = None
    accuracy: float = Field(0.8, ge=0, le=1)
    none_bias: float | None = Field(None, ge=0, le=1, description="P(answer none | error, gold != none)")
    class_bias: dict[str, dict[str, float]] = Field(default_factory=dict)
    confusions: dict[str, dict[str, dict[str, float]]] = Field(default_factory=dict)
    latency_ms: Latency | None = None
    faults: Faults | None = None
    burst_429: Burst429 | None = None
    obedient: bool = False
    chatty: bool = False
    drift: Drift | None = None
    price_in_per_1k: float = 0.0
    price_out_per_1k: float = 0.0


class SimConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: str = Field("confusion", pattern="^(confusion|replay)$")
    products: str | None = None
    predictions: str | None = None
    seed: int = 0
    batch_seconds: float = Field(0.5, ge=0, description="a batch job ends this long after it was created")
    defaults: dict[str, Any] = Field(default_factory=dict)
    models: list[SimModel] = Field(default_factory=list)


def load_sim_config(source: str | Path | dict | SimConfig | None) -> SimConfig:
    """A config from a YAML/JSON path, a dict, or ``None`` for the built-in default."""
    if source is None:
        return default_sim_config()
    if isinstance(source, SimConfig):
        return source
    if isinstance(source, (str, Path)):
        raw = yaml.safe_load(Path(source).read_text())
    else:
        raw = source
    return SimConfig.model_validate(raw)


def default_sim_config() -> SimConfig:
    text = resources.files("llmens_core.llm").joinpath("sim_default.yaml").read_text()
    return SimConfig.model_validate(yaml.safe_load(text))


def endpoints_for(config: SimConfig, base_url: str, **overrides: Any) -> list[EndpointConfig]:
    """Endpoint configs that point the gateway at a running simulator (one per simulated model)."""
    return [
        EndpointConfig(**{"name": m.name, "provider": "openai", "base_url": base_url, "model": m.name,
                          "family": m.family, "price_in_per_1k": m.price_in_per_1k,
                          "price_out_per_1k": m.price_out_per_1k, **overrides})
        for m in config.models
    ]


def _lognormal_params(mean_ms: float, p99_ms: float) -> tuple[float, float] | None:
    if mean_ms <= 0:
        return None
    p99_ms = max(p99_ms, mean_ms)
    d = math.log(p99_ms) - math.log(mean_ms)
    z = 2.3263478740408408
    disc = z * z - 2 * d
    sigma = z - math.sqrt(disc) if disc > 0 else z
    mu = math.log(mean_ms) - sigma * sigma / 2
    return mu, sigma


def _stable_rng(*parts: Any) -> random.Random:
    h = hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8", "surrogatepass")).digest()
    return random.Random(int.from_bytes(h[:8], "big"))


_VALUE_INJECTION = re.compile(
    r"(?:answer|respond with|reply with|output|say|label (?:it|this|everything) as|set \w+ to|the \w+ is)"
    r"\s*[:=]?\s*[\"']?([A-Za-z0-9_ /\-]{1,40})", re.I)


@dataclass
class _ModelState:
    cfg: SimModel
    faults: Faults
    latency: tuple[float, float] | None
    served: int = 0
    fault_rng: random.Random = field(default_factory=random.Random)
    outcomes: Counter = field(default_factory=Counter)


class Simulator:
    """The simulated models and their answers; :meth:`app` builds the aiohttp application."""

    def __init__(self, config: SimConfig):
        self.config = config
        d = config.defaults or {}
        dfaults = Faults.model_validate(d.get("faults") or {})
        dlat = Latency.model_validate(d.get("latency_ms") or {})
        self.gold: dict[str, dict[str, Any]] = {}
        self.replay: dict[str, dict[str, dict[str, Any]]] = {}  # model -> title -> {attr: value}
        models = list(config.models)
        if config.mode == "replay":
            models = self._load_replay(models)
        else:
            self._load_products()
        self.models: dict[str, _ModelState] = {}
        for i, m in enumerate(models):
            lat = m.latency_ms or dlat
            self.models[m.name] = _ModelState(
                m, m.faults or dfaults, _lognormal_params(lat.mean, lat.p99),
                fault_rng=random.Random(config.seed * 1_000_003 + i))
        self.latency_rng = random.Random(config.seed + 17)

    # -- data ------------------------------------------------------------------------------------
    def _products_lines(self, path: str | None) -> list[dict]:
        if path is None:
            data = resources.files("llmens_core.data").joinpath("demo_products.jsonl").read_bytes()
        else:
            data = Path(path).read_bytes()
        return [orjson.loads(line) for line in data.splitlines() if line.strip()]

    def _load_products(self) -> None:
        for p in self._products_lines(self.config.products):
            gold = p.get("attributes") or {}
            if isinstance(gold, dict):
                self.gold[p["title"]] = {k: (NONE if v is None else v) for k, v in gold.items()}

    def _load_replay(self, overrides: list[SimModel]) -> list[SimModel]:
        if not self.config.predictions:
            raise ValueError("replay mode needs `predictions` (a predictions JSONL)")
        products = self.config.products
        if products is None:  # the products file that sits next to the predictions, if any
            sibling = Path(self.config.predictions).with_name("products.jsonl")
            products = str(sibling) if sibling.exists() else None
        titles = {p["product_id"]: p["title"] for p in self._products_lines(products)}
        for line in Path(self.config.predictions).read_bytes().splitlines():
            if not line.strip():
                continue
            r = orjson.loads(line)
            title = titles.get(r["product_id"])
            if title is None:
                continue
            v = r.get("value")
            self.replay.setdefault(r["model"], {}).setdefault(title, {})[r["attribute"]] = NONE if v is None else v
        by_name = {m.name: m for m in overrides}
        return [by_name.get(name, SimModel(name=name, accuracy=1.0)) for name in sorted(self.replay)]

    # -- answers ---------------------------------------------------------------------------------
    def _pseudo_gold(self, title: str, attr: str, classes: list[str]) -> str:
        return classes[_stable_rng("gold", title, attr).randrange(len(classes))]

    def confusion_answer(self, st: _ModelState, title: str, attr: str, classes: list[str]) -> str:
        m = st.cfg
        gold = self.gold.get(title, {}).get(attr)
        if gold is None or gold not in classes:
            gold = NONE if title in self.gold and NONE in classes else self._pseudo_gold(title, attr, classes)
        rng = _stable_rng(self.config.seed, m.name, title, attr)
        row = m.confusions.get(attr, {}).get(gold)
        if row:
            labels = [c for c in row if c in classes]
            if labels:
                return rng.choices(labels, weights=[row[c] for c in labels])[0]
        acc = m.accuracy
        if m.drift is not None and st.served > m.drift.after:
            acc = m.drift.accuracy
        if rng.random() < acc:
            return gold
        others = [c for c in classes if c != gold]
        if not others:
            return gold
        if m.none_bias is not None and gold != NONE and NONE in others:
            if rng.random() < m.none_bias:
                return NONE
            others = [c for c in others if c != NONE] or others
        bias = m.class_bias.get(attr, {})
        return rng.choices(others, weights=[bias.get(c, 1.0) for c in others])[0]

    def answer(self, st: _ModelState, product: dict, labels: dict[str, list[str]]) -> dict[str, Any]:
        title = str(product.get("title") or product.get("product title") or "")
        out: dict[str, Any] = {}
        if self.config.mode == "replay":
            rec = self.replay.get(st.cfg.name, {}).get(title, {})
            for attr in labels:
                if attr in rec:
                    out[attr] = rec[attr]
            return out
        for attr, classes in labels.items():
            classes = [NONE if c == "None" else c for c in classes]
            out[attr] = self.confusion_answer(st, title, attr, classes)
        return out

    # -- HTTP ------------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app[SIM_KEY] = self
        app.router.add_post("/v1/chat/completions", self.handle_chat)
        app.router.add_get("/v1/models", self.handle_models)
        app.router.add_get("/v1/sim/stats", self.handle_stats)
        from llmens_core.llm.sim_batch import add_batch_routes  # the batch APIs answer through serve_prompt

        add_batch_routes(app, self)
        return app

    async def handle_models(self, request: web.Request) -> web.Response:
        data = [{"id": n, "object": "model", "created": 0, "owned_by": "llmens-simulator"} for n in self.models]
        return web.json_response({"object": "list", "data": data})

    async def handle_stats(self, request: web.Request) -> web.Response:
        return web.json_response({n: {"served": s.served, **s.outcomes} for n, s in self.models.items()})

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
        body = orjson.dumps({"error": {"message": message, "type": "simulated", "code": status}})
        return web.Response(status=status, body=body, content_type="application/json", headers=headers)

    async def handle_chat(self, request: web.Request) -> web.Response:
        try:
            req = orjson.loads(await request.read())
            model_name = req["model"]
            messages = req["messages"]
            prompt = "\n".join(m.get("content") or "" for m in messages if isinstance(m.get("content"), str))
        except Exception:
            return self._error(400, "invalid request body")
        out = await self.serve_prompt(model_name, prompt)
        if isinstance(out, SimError):
            return self._error(out.status, out.message, out.headers)
        return web.Response(body=orjson.dumps(self.completion(model_name, out)), content_type="application/json")

    async def serve_prompt(self, model_name: str, prompt: str, *, live: bool = True) -> SimReply | SimError:
        """One model's reply to one prompt (the same answer however it is asked: chat call or batch line).

        ``live`` False (a batch line): no latency is slept and a hang is a server error at once; faults are
        drawn from the same per-model stream as live calls.
        """
        st = self.models.get(model_name)
        if st is None:
            return SimError(404, f"model {model_name!r} not found")
        st.served += 1
        n = st.served - 1
        f = st.faults
        b = st.cfg.burst_429
        if b is not None and n >= b.start:
            off = n - b.start
            if (off % b.every if b.every else off) < b.length:
                if b.status != 429:
                    st.outcomes[f"burst_{b.status}"] += 1
                    return SimError(b.status, "outage (burst)")
                st.outcomes["burst_429"] += 1
                return SimError(429, "rate limited (burst)", {"Retry-After": _fmt_retry(b.retry_after_s, False)})
        if st.latency is not None and live:
            await asyncio.sleep(self.latency_rng.lognormvariate(*st.latency) / 1000.0)
        u = st.fault_rng.random()
        if u < f.http_429:
            st.outcomes["http_429"] += 1
            return SimError(429, "rate limited", {"Retry-After": _fmt_retry(f.retry_after_s, f.retry_after_http_date)})
        u -= f.http_429
        if u < f.http_500:
            st.outcomes["http_500"] += 1
            return SimError(500, "simulated server error")
        u -= f.http_500
        if u < f.hang:
            st.outcomes["hang"] += 1
            if live:
                await asyncio.sleep(f.hang_s)
            return SimError(504, "simulated hang")
        u -= f.hang
        labels, product = _read_prompt(prompt)
        if labels is None or product is None:
            st.outcomes["unreadable_prompt"] += 1
            return SimError(400, "prompt has no llmens label list or product block")
        ecinstruct = "target attributes" in product
        answers = self.answer(st, product, labels)
        declined = self._declined(st, u, _render(answers, ecinstruct))
        if declined is not None:
            return SimReply(n, prompt, *declined)
        u -= f.refusal + f.content_filter + f.length
        if u < f.malformed:
            st.outcomes["malformed"] += 1
            content = _render(answers, ecinstruct)[: max(3, len(_render(answers, ecinstruct)) // 2)]
        else:
            u -= f.malformed
            if u < f.out_of_schema and answers:
                st.outcomes["out_of_schema"] += 1
                answers[next(iter(answers))] = "ultraviolet-" + str(st.fault_rng.randrange(1000))
            content = None
            if st.cfg.obedient:
                answers, content = _obey(product, answers, ecinstruct)
            if content is None:
                content = _render(answers, ecinstruct)
            if st.cfg.chatty:
                content = f"Sure! Here are the labels:\n```json\n{content}\n```\nLet me know if you need more."
            st.outcomes["ok"] += 1
        return SimReply(n, prompt, {"role": "assistant", "content": content}, "stop")

    @staticmethod
    def _declined(st: _ModelState, u: float, content: str) -> tuple[dict[str, Any], str] | None:
        """(message, finish_reason) of a refusal, content filter or cut-off drawn with ``u``, else ``None``."""
        f = st.faults
        if u < f.refusal:
            st.outcomes["refusal"] += 1
            return {"role": "assistant", "content": None, "refusal": "I can't help with that request."}, "stop"
        u -= f.refusal
        if u < f.content_filter:
            st.outcomes["content_filter"] += 1
            return {"role": "assistant", "content": ""}, "content_filter"
        u -= f.content_filter
        if u < f.length:
            st.outcomes["length"] += 1
            return {"role": "assistant", "content": content[: max(1, len(content) // 2)]}, "length"
        return None

    @staticmethod
    def completion(model_name: str, reply: SimReply) -> dict[str, Any]:
        """The OpenAI chat completion of ``reply`` (usage: a token per 4 characters of prompt and answer)."""
        ptok, ctok = reply.usage()
        return {
            "id": f"chatcmpl-sim-{reply.n}", "object": "chat.completion", "created": int(time.time()),
            "model": model_name,
            "choices": [{"index": 0, "message": reply.message, "finish_reason": reply.finish}],
            "usage": {"prompt_tokens": ptok, "completion_tokens": ctok, "total_tokens": ptok + ctok},
        }


@dataclass(frozen=True)
class SimError:
    """An HTTP error a model gives instead of an answer."""

    status: int
    message: str
    headers: dict[str, str] | None = None


@dataclass(frozen=True)
class SimReply:
    """A model's answer: the OpenAI-style message and finish reason (``stop``, ``length``, ``content_filter``)."""

    n: int
    prompt: str
    message: dict[str, Any]
    finish: str

    def usage(self) -> tuple[int, int]:
        content = self.message.get("content") or self.message.get("refusal") or ""
        return max(1, len(self.prompt) // 4), max(1, len(content) // 4)


def _fmt_retry(seconds: float, http_date: bool) -> str:
    if http_date:
        from email.utils import formatdate
        return formatdate(time.time() + seconds, usegmt=True)
    return f"{seconds:g}"


_LABELS_LINE = re.compile(r"Allowed (?:labels|values): (\{.*\})[ \t]*$", re.M)


def _read_prompt(prompt: str) -> tuple[dict[str, list[str]] | None, dict | None]:
    m = _LABELS_LINE.search(prompt)
    labels = None
    if m:
        try:
            labels = orjson.loads(m.group(1))
        except orjson.JSONDecodeError:
            labels = None
    i = prompt.rfind(DATA_BEGIN)
    j = prompt.rfind(DATA_END)
    product = None
    if 0 <= i < j:
        try:
            product = orjson.loads(prompt[i + len(DATA_BEGIN):j].strip())
        except orjson.JSONDecodeError:
            product = None
    return labels, product if isinstance(product, dict) else None


def _render(answers: dict[str, Any], ecinstruct: bool) -> str:
    if ecinstruct:
        return orjson.dumps([{"attribute": a, "value": "None" if v == NONE else v, "source": "product title"}
                             for a, v in answers.items()]).decode()
    return orjson.dumps(answers).decode()


def _obey(product: dict, answers: dict[str, Any], ecinstruct: bool) -> tuple[dict[str, Any], str | None]:
    """Follow instructions found in the product text, as a gullible model would."""
    text = " ".join(str(product.get(k) or "") for k in ("title", "description", "product title",
                                                         "product description", "product feature"))
    answers = dict(answers)
    m = _VALUE_INJECTION.search(text)
    if m:
        value = m.group(1).strip()
        for a in answers:
            answers[a] = value
    dec = json.JSONDecoder()
    for mm in re.finditer(r"\{", text):
        try:
            obj, _ = dec.raw_decode(text, mm.start())
        except ValueError:
            continue
        if isinstance(obj, dict):
            answers.update(obj)  # may add attributes and any values
    if '"}' in text or "'}" in text or "```" in text:
        # "close the JSON": paste the product text unescaped into the answer
        first = next(iter(answers), "attribute")
        return answers, '{"' + first + '": "' + text + '"}'
    return answers, None


async def start_simulator(config: SimConfig | dict | str | Path | None = None, host: str = "127.0.0.1",
                          port: int = 0) -> tuple[web.AppRunner, int]:
    """Start the simulator; returns (runner, bound port). Stop with ``await runner.cleanup()``."""
    sim = Simulator(load_sim_config(config))
    runner = web.AppRunner(sim.app(), handle_signals=False, access_log=None, handler_cancellation=True,
                           shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, bound
