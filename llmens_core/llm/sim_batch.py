"""The simulator's batch APIs: OpenAI Batch, Anthropic Message Batches and Gemini batch mode, on loopback.

* OpenAI: ``POST /v1/files`` (multipart, ``purpose=batch``, a JSONL of ``{custom_id, method, url, body}``),
  ``POST /v1/batches``, ``GET /v1/batches`` (newest first, with their ``metadata``), ``GET /v1/batches/{id}``, ``GET /v1/files/{id}/content`` (output and error files).
* Anthropic: ``POST /v1/messages/batches`` (``requests: [{custom_id, params}]``), ``GET
  /v1/messages/batches/{id}``, ``GET /v1/messages/batches/{id}/results`` (JSONL, ``result.type`` succeeded or
  errored).
* Gemini (under ``/v1beta``): ``POST models/{model}:batchGenerateContent`` (inlined requests, ``metadata.key``),
  ``GET batches/{id}`` (an operation; ``metadata.output.inlinedResponses`` once it succeeded), ``GET batches``.

Every line is answered by :meth:`Simulator.serve_prompt` with the prompt a chat call would carry, so a batch
line and a synchronous call for the same product, attribute and model get the same answer; a fault that would
be an HTTP error is an errored line, and ``faults.batch_missing`` leaves a line out of the results. A batch
ends ``batch_seconds`` after it was created (its lines are answered on the first poll after that).
``GET /v1/sim/batch_requests`` counts each custom id submitted, to check that nothing is asked twice.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

if TYPE_CHECKING:
    from llmens_core.llm.simulator import SimError, SimReply, Simulator

__all__ = ["BATCH_KEY", "add_batch_routes"]

_IDS = itertools.count(1)
BATCH_KEY: web.AppKey[BatchStore] = web.AppKey("batches")
_ANTHROPIC_STOP = {"stop": "end_turn", "length": "max_tokens", "content_filter": "refusal"}


@dataclass
class _Batch:
    kind: str  # "openai" | "anthropic" | "gemini"
    id: str
    created: float
    lines: list[dict[str, Any]]
    input_file_id: str | None = None
    model: str | None = None
    label: Any = None  # OpenAI metadata, Gemini displayName
    results: list[bytes] | None = None
    errors: list[bytes] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)


class BatchStore:
    """The simulator's files and batch jobs, and how often each custom id was submitted (``asked``)."""

    def __init__(self, sim: Simulator):
        self.sim = sim
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, _Batch] = {}
        self.asked: Counter = Counter()

    def new(self, kind: str, lines: list[dict[str, Any]], input_file_id: str | None = None,
            model: str | None = None, label: Any = None) -> _Batch:
        prefix = {"openai": "batch_sim", "anthropic": "msgbatch_sim", "gemini": "gembatch"}[kind]
        b = _Batch(kind, f"{prefix}{next(_IDS):06d}", time.time(), lines, input_file_id, model, label)
        self.asked.update(str(_custom_id(kind, line)) for line in lines)
        self.batches[b.id] = b
        return b

    async def run(self, b: _Batch) -> None:
        """Answer every line of ``b`` once its time has come (idempotent)."""
        if b.results is not None or time.time() < b.created + self.sim.config.batch_seconds:
            return
        results: list[bytes] = []
        for line in b.lines:
            cid = _custom_id(b.kind, line)
            model, prompt = _PROMPT[b.kind](line, b)
            st = self.sim.models.get(model)
            if st is not None and st.fault_rng.random() < st.faults.batch_missing:
                st.outcomes["batch_missing"] += 1
                continue
            out = await self.sim.serve_prompt(model, prompt, live=False)
            ok = not hasattr(out, "status")
            b.counts["completed" if ok else "failed"] += 1
            record = _RECORD[b.kind](self.sim, cid, model, out)
            (results if ok or b.kind != "openai" else b.errors).append(orjson.dumps(record))
        b.results = results
        if b.kind == "openai":
            self.files[f"file-out-{b.id}"] = b"\n".join(results) + b"\n" if results else b""
            if b.errors:
                self.files[f"file-err-{b.id}"] = b"\n".join(b.errors) + b"\n"


def _custom_id(kind: str, line: dict[str, Any]) -> Any:
    return (line.get("metadata") or {}).get("key") if kind == "gemini" else line.get("custom_id")


def _openai_prompt(line: dict[str, Any], b: _Batch) -> tuple[str, str]:
    body = line.get("body") or {}
    msgs = body.get("messages") or []
    return str(body.get("model")), "\n".join(m.get("content") or "" for m in msgs if isinstance(m.get("content"), str))


def _anthropic_prompt(line: dict[str, Any], b: _Batch) -> tuple[str, str]:
    params = line.get("params") or {}
    parts = [params.get("system")] + [m.get("content") for m in params.get("messages") or []]
    return str(params.get("model")), "\n".join(p for p in parts if isinstance(p, str))


def _gemini_prompt(line: dict[str, Any], b: _Batch) -> tuple[str, str]:
    req = line.get("request") or {}
    contents = [req.get("systemInstruction") or {}, *(req.get("contents") or [])]
    texts = [p.get("text") for c in contents for p in c.get("parts") or [] if isinstance(p, dict)]
    return str(b.model), "\n".join(t for t in texts if isinstance(t, str))


def _gemini_line(sim: Simulator, cid: Any, model: str, out: SimReply | SimError) -> dict[str, Any]:
    if hasattr(out, "status"):
        return {"error": {"code": out.status, "message": out.message, "status": "INTERNAL"}, "metadata": {"key": cid}}
    ptok, ctok = out.usage()
    msg = out.message
    blocked = bool(msg.get("refusal")) or out.finish == "content_filter"
    finish = "SAFETY" if blocked else ("MAX_TOKENS" if out.finish == "length" else "STOP")
    candidate: dict[str, Any] = {"finishReason": finish, "index": 0}
    if not blocked:
        candidate["content"] = {"role": "model", "parts": [{"text": msg.get("content") or ""}]}
    return {"response": {"candidates": [candidate], "modelVersion": model, "usageMetadata": {
        "promptTokenCount": ptok, "candidatesTokenCount": ctok, "totalTokenCount": ptok + ctok}},
        "metadata": {"key": cid}}


def _openai_line(sim: Simulator, cid: Any, model: str, out: SimReply | SimError) -> dict[str, Any]:
    if hasattr(out, "status"):
        response = {"status_code": out.status, "request_id": f"req_{cid}",
                    "body": {"error": {"message": out.message, "type": "simulated", "code": out.status}}}
    else:
        response = {"status_code": 200, "request_id": f"req_{cid}", "body": sim.completion(model, out)}
    return {"id": f"batch_req_{cid}", "custom_id": cid, "response": response, "error": None}


def _anthropic_line(sim: Simulator, cid: Any, model: str, out: SimReply | SimError) -> dict[str, Any]:
    if hasattr(out, "status"):
        kind = "rate_limit_error" if out.status == 429 else "api_error"
        return {"custom_id": cid, "result": {"type": "errored", "error": {
            "type": "error", "error": {"type": kind, "message": out.message}}}}
    ptok, ctok = out.usage()
    msg = out.message
    refused = bool(msg.get("refusal")) or out.finish == "content_filter"
    text = None if refused else msg.get("content")
    message = {"id": f"msg_sim_{out.n}", "type": "message", "role": "assistant", "model": model,
               "content": [{"type": "text", "text": text}] if text else [],
               "stop_reason": "refusal" if refused else _ANTHROPIC_STOP.get(out.finish, "end_turn"),
               "stop_sequence": None, "usage": {"input_tokens": ptok, "output_tokens": ctok}}
    return {"custom_id": cid, "result": {"type": "succeeded", "message": message}}


_PROMPT = {"openai": _openai_prompt, "anthropic": _anthropic_prompt, "gemini": _gemini_prompt}
_RECORD = {"openai": _openai_line, "anthropic": _anthropic_line, "gemini": _gemini_line}


def _iso(t: float | None) -> str | None:
    return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _openai_batch(b: _Batch) -> dict[str, Any]:
    done = b.results is not None
    return {
        "id": b.id, "object": "batch", "endpoint": "/v1/chat/completions", "input_file_id": b.input_file_id,
        "completion_window": "24h", "status": "completed" if done else "in_progress",
        "created_at": int(b.created), "in_progress_at": int(b.created),
        "completed_at": int(time.time()) if done else None,
        "output_file_id": f"file-out-{b.id}" if done else None,
        "error_file_id": f"file-err-{b.id}" if done and b.errors else None,
        "request_counts": {"total": len(b.lines), "completed": b.counts["completed"], "failed": b.counts["failed"]},
        "metadata": b.label,
    }


def _anthropic_batch(b: _Batch, base: str) -> dict[str, Any]:
    done = b.results is not None
    n = len(b.lines)
    return {
        "id": b.id, "type": "message_batch", "processing_status": "ended" if done else "in_progress",
        "request_counts": {"processing": 0 if done else n, "succeeded": b.counts["completed"],
                           "errored": b.counts["failed"], "canceled": 0, "expired": 0},
        "created_at": _iso(b.created), "expires_at": _iso(b.created + 86400), "ended_at": _iso(time.time()) if done
        else None, "archived_at": None, "cancel_initiated_at": None,
        "results_url": f"{base}/v1/messages/batches/{b.id}/results" if done else None,
    }


def _gemini_op(b: _Batch) -> dict[str, Any]:
    done = b.results is not None
    n = len(b.lines)
    meta: dict[str, Any] = {
        "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatch",
        "model": f"models/{b.model}", "displayName": b.label, "name": f"batches/{b.id}",
        "state": "BATCH_STATE_SUCCEEDED" if done else "BATCH_STATE_RUNNING", "createTime": _iso(b.created),
        "updateTime": _iso(time.time()),
        "batchStats": {"requestCount": str(n), "successfulRequestCount": str(b.counts["completed"]),
                       "failedRequestCount": str(b.counts["failed"]), "pendingRequestCount": str(0 if done else n)}}
    op: dict[str, Any] = {"name": f"batches/{b.id}", "metadata": meta, "done": done}
    if done:
        output = {"inlinedResponses": {"inlinedResponses": [orjson.loads(r) for r in b.results or []]}}
        meta["endTime"] = _iso(time.time())
        meta["output"] = output
        op["response"] = {"@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatchOutput",
                          **output}
    return op


def _err(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "invalid_request_error"}}, status=status)


def add_batch_routes(app: web.Application, sim: Simulator) -> None:
    """Serve the batch endpoints of ``sim`` on ``app``."""
    store = app[BATCH_KEY] = BatchStore(sim)

    async def asked(request: web.Request) -> web.Response:
        return web.json_response(dict(store.asked))

    app.router.add_get("/v1/sim/batch_requests", asked)
    for routes in (_openai_routes, _anthropic_routes, _gemini_routes):
        routes(app, store)


def _openai_routes(app: web.Application, store: BatchStore) -> None:
    async def upload(request: web.Request) -> web.Response:
        form = await request.post()
        f = form.get("file")
        if form.get("purpose") != "batch" or f is None or not hasattr(f, "file"):
            return _err(400, "expected multipart purpose=batch and a file")
        data = f.file.read()
        fid = f"file-in-{next(_IDS):06d}"
        store.files[fid] = data
        return web.json_response({"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                                  "filename": f.filename or "batch.jsonl", "purpose": "batch", "status": "processed"})

    async def create_openai(request: web.Request) -> web.Response:
        req = orjson.loads(await request.read())
        data = store.files.get(req.get("input_file_id"))
        if data is None:
            return _err(404, "no such input file")
        if req.get("endpoint") != "/v1/chat/completions":
            return _err(400, "only /v1/chat/completions batches are simulated")
        try:
            lines = [orjson.loads(x) for x in data.splitlines() if x.strip()]
        except orjson.JSONDecodeError:
            return _err(400, "input file is not JSONL")
        return web.json_response(_openai_batch(store.new("openai", lines, req["input_file_id"],
                                                         label=req.get("metadata"))))

    async def list_openai(request: web.Request) -> web.Response:
        data = [_openai_batch(b) for b in reversed(store.batches.values()) if b.kind == "openai"]
        return web.json_response({"object": "list", "data": data[:int(request.query.get("limit", 20))],
                                  "has_more": False})

    async def get_openai(request: web.Request) -> web.Response:
        b = store.batches.get(request.match_info["id"])
        if b is None or b.kind != "openai":
            return _err(404, "no such batch")
        await store.run(b)
        return web.json_response(_openai_batch(b))

    async def content(request: web.Request) -> web.Response:
        data = store.files.get(request.match_info["id"])
        return _err(404, "no such file") if data is None else web.Response(body=data,
                                                                          content_type="application/octet-stream")

    app.router.add_post("/v1/files", upload)
    app.router.add_get("/v1/files/{id}/content", content)
    app.router.add_post("/v1/batches", create_openai)
    app.router.add_get("/v1/batches", list_openai)
    app.router.add_get("/v1/batches/{id}", get_openai)


def _anthropic_routes(app: web.Application, store: BatchStore) -> None:
    async def create_anthropic(request: web.Request) -> web.Response:
        req = orjson.loads(await request.read())
        reqs = req.get("requests")
        if not isinstance(reqs, list) or not reqs:
            return _err(400, "requests: a non-empty list of {custom_id, params}")
        return web.json_response(_anthropic_batch(store.new("anthropic", reqs), _base(request)))

    async def get_anthropic(request: web.Request) -> web.Response:
        b = store.batches.get(request.match_info["id"])
        if b is None or b.kind != "anthropic":
            return _err(404, "no such batch")
        await store.run(b)
        return web.json_response(_anthropic_batch(b, _base(request)))

    async def results_anthropic(request: web.Request) -> web.Response:
        b = store.batches.get(request.match_info["id"])
        if b is None or b.results is None:
            return _err(404, "no results (yet)")
        return web.Response(body=b"".join(r + b"\n" for r in b.results), content_type="application/binary")

    app.router.add_post("/v1/messages/batches", create_anthropic)
    app.router.add_get("/v1/messages/batches/{id}", get_anthropic)
    app.router.add_get("/v1/messages/batches/{id}/results", results_anthropic)


def _gemini_routes(app: web.Application, store: BatchStore) -> None:
    async def create_gemini(request: web.Request) -> web.Response:
        req = orjson.loads(await request.read())
        reqs = (((req.get("batch") or {}).get("inputConfig") or {}).get("requests") or {}).get("requests")
        if not isinstance(reqs, list) or not reqs:
            return _err(400, "batch.inputConfig.requests.requests: a non-empty list of {request, metadata}")
        label = (req.get("batch") or {}).get("displayName")
        return web.json_response(_gemini_op(store.new("gemini", reqs, model=request.match_info["model"], label=label)))

    async def list_gemini(request: web.Request) -> web.Response:
        ops = [_gemini_op(b) for b in reversed(store.batches.values()) if b.kind == "gemini"]
        return web.json_response({"operations": ops[:int(request.query.get("pageSize", 50))]})

    async def get_gemini(request: web.Request) -> web.Response:
        b = store.batches.get(request.match_info["id"])
        if b is None or b.kind != "gemini":
            return _err(404, "no such batch")
        await store.run(b)
        return web.json_response(_gemini_op(b))

    app.router.add_post("/v1beta/models/{model:[^/:]+}:batchGenerateContent", create_gemini)
    app.router.add_get("/v1beta/batches", list_gemini)
    app.router.add_get("/v1beta/batches/{id}", get_gemini)


def _base(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"
