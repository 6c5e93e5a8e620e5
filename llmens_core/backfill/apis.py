"""The providers' batch APIs over aiohttp: submit a batch, poll it, read its result lines.

* ``openai`` (OpenAI and OpenAI-compatible servers): ``POST /v1/files`` (``purpose=batch``, a JSONL of
  ``{custom_id, method, url, body}``), ``POST /v1/batches``, ``GET /v1/batches/{id}``, then the output and
  error files from ``GET /v1/files/{id}/content``.
* ``anthropic``: ``POST /v1/messages/batches`` (``requests: [{custom_id, params}]``), ``GET
  /v1/messages/batches/{id}``, then the JSONL at its ``results_url``.
* ``gemini``: ``POST models/{model}:batchGenerateContent`` with inlined requests (``metadata.key`` = the custom
  id), then ``GET batches/{id}`` until its state ends; the responses are inlined in ``metadata.output``.

Each result line becomes a :class:`LineResult`: the response body the synchronous API would have returned (read
by the same :class:`~llmens_core.llm.providers.Provider`), or the error that line got. Base URLs are taken as
the gateway takes them (with or without the version segment).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from llmens_core.backfill.requests import BatchRequest
from llmens_core.llm.config import EndpointConfig
from llmens_core.llm.providers import PROVIDERS, _openai_base, _versioned

__all__ = ["BATCH_APIS", "BatchApi", "BatchApiError", "BatchStatus", "LineResult"]


class BatchApiError(Exception):
    """A batch API call failed; ``retryable`` says whether asking again may help."""

    def __init__(self, message: str, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class BatchStatus:
    """Where a batch job is: ``ended`` (results can be read), ``failed`` (ended without results, why)."""

    ended: bool
    done: int
    total: int
    failed: str | None = None


@dataclass(frozen=True)
class LineResult:
    """One result line: the synchronous API's response body, or the line's error."""

    custom_id: str
    data: Any = None
    error: str | None = None


async def _json(session: aiohttp.ClientSession, method: str, url: str, headers: dict[str, str], **kw) -> Any:
    raw = await _bytes(session, method, url, headers, **kw)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BatchApiError(f"{method} {url}: not JSON") from None


async def _bytes(session: aiohttp.ClientSession, method: str, url: str, headers: dict[str, str], **kw) -> bytes:
    try:
        async with session.request(method, url, headers=headers, timeout=aiohttp.ClientTimeout(total=120),
                                   **kw) as resp:
            raw = await resp.read()
            status = resp.status
    except (aiohttp.ClientError, OSError, TimeoutError) as e:
        raise BatchApiError(f"{method} {url}: {type(e).__name__}") from None
    if status >= 400:
        raise BatchApiError(f"{method} {url}: HTTP {status}: {raw[:300].decode('utf-8', 'replace')}",
                            retryable=status in (408, 409, 429) or status >= 500)
    return raw


def _jsonl(raw: bytes) -> list[Any]:
    out = []
    for line in raw.splitlines():
        if line.strip():
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue  # an unreadable line is a missing line: its request is asked again
    return out


class BatchApi:
    """One provider's batch API."""

    name = "base"

    def headers(self, ep: EndpointConfig) -> dict[str, str]:
        return PROVIDERS[ep.provider].headers(ep, ep.api_key())

    async def submit(self, session: aiohttp.ClientSession, ep: EndpointConfig, reqs: list[BatchRequest],
                     key: str) -> str:
        """Submit ``reqs`` as one batch labelled ``key`` (where the API can label one); returns the batch id."""
        raise NotImplementedError

    async def find(self, session: aiohttp.ClientSession, ep: EndpointConfig, key: str) -> str | None:
        """The id of a batch labelled ``key`` at the provider, or ``None`` (also when the API has no labels)."""
        return None

    async def poll(self, session: aiohttp.ClientSession, ep: EndpointConfig, batch_id: str) -> BatchStatus:
        raise NotImplementedError

    async def results(self, session: aiohttp.ClientSession, ep: EndpointConfig, batch_id: str) -> list[LineResult]:
        raise NotImplementedError


class OpenAIBatchApi(BatchApi):
    name = "openai"

    @staticmethod
    def line(ep: EndpointConfig, req: BatchRequest) -> dict[str, Any]:
        """One input line (``BatchRequestInput``): the chat completions body the gateway sends."""
        return {"custom_id": req.custom_id, "method": "POST", "url": "/v1/chat/completions", "body": req.body(ep)}

    async def submit(self, session, ep, reqs, key):
        base = _openai_base(ep.base_url)
        data = b"".join(orjson.dumps(self.line(ep, r)) + b"\n" for r in reqs)
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", data, filename="llmens-backfill.jsonl", content_type="application/jsonl")
        auth = {k: v for k, v in self.headers(ep).items() if k != "Content-Type"}
        uploaded = await _json(session, "POST", f"{base}/files", auth, data=form)
        batch = await _json(session, "POST", f"{base}/batches", self.headers(ep), data=orjson.dumps({
            "input_file_id": uploaded["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h",
            "metadata": {"source": "llmens backfill", "llmens_key": key}}))
        return str(batch["id"])

    async def find(self, session, ep, key):
        page = await _json(session, "GET", f"{_openai_base(ep.base_url)}/batches?limit=100", self.headers(ep))
        return next((str(b["id"]) for b in page.get("data") or []
                     if isinstance(b, dict) and (b.get("metadata") or {}).get("llmens_key") == key), None)

    async def poll(self, session, ep, batch_id):
        b = await _json(session, "GET", f"{_openai_base(ep.base_url)}/batches/{batch_id}", self.headers(ep))
        counts = b.get("request_counts") or {}
        done = int(counts.get("completed") or 0) + int(counts.get("failed") or 0)
        status = b.get("status")
        failed = status if status in ("failed", "cancelled") and not b.get("output_file_id") else None
        return BatchStatus(status in ("completed", "expired", "failed", "cancelled"), done,
                           int(counts.get("total") or 0), failed)

    async def results(self, session, ep, batch_id):
        base = _openai_base(ep.base_url)
        b = await _json(session, "GET", f"{base}/batches/{batch_id}", self.headers(ep))
        lines = []
        for fid in (b.get("output_file_id"), b.get("error_file_id")):
            if fid:
                lines += _jsonl(await _bytes(session, "GET", f"{base}/files/{fid}/content", self.headers(ep)))
        return [self._line(x) for x in lines if isinstance(x, dict) and isinstance(x.get("custom_id"), str)]

    @staticmethod
    def _line(x: dict[str, Any]) -> LineResult:
        resp = x.get("response") if isinstance(x.get("response"), dict) else {}
        if x.get("error"):
            err = x["error"]
            return LineResult(x["custom_id"], error=str(err.get("message") if isinstance(err, dict) else err))
        if resp.get("status_code") != 200:
            body = resp.get("body") if isinstance(resp.get("body"), dict) else {}
            msg = (body.get("error") or {}).get("message") if isinstance(body.get("error"), dict) else None
            return LineResult(x["custom_id"], error=f"http_{resp.get('status_code')}: {msg or 'error'}")
        return LineResult(x["custom_id"], data=resp.get("body"))


class AnthropicBatchApi(BatchApi):
    name = "anthropic"

    @staticmethod
    def request(ep: EndpointConfig, req: BatchRequest) -> dict[str, Any]:
        """One ``requests`` item: ``params`` is the Messages body the gateway sends."""
        return {"custom_id": req.custom_id, "params": req.body(ep)}

    @staticmethod
    def _url(ep: EndpointConfig) -> str:
        return _versioned(ep.base_url, ("v1",), "v1") + "/messages/batches"

    async def submit(self, session, ep, reqs, key):  # a Message Batch has no label: find() cannot find it
        body = orjson.dumps({"requests": [self.request(ep, r) for r in reqs]})
        return str((await _json(session, "POST", self._url(ep), self.headers(ep), data=body))["id"])

    async def poll(self, session, ep, batch_id):
        b = await _json(session, "GET", f"{self._url(ep)}/{batch_id}", self.headers(ep))
        c = b.get("request_counts") or {}
        done = sum(int(c.get(k) or 0) for k in ("succeeded", "errored", "canceled", "expired"))
        return BatchStatus(b.get("processing_status") == "ended", done, done + int(c.get("processing") or 0))

    async def results(self, session, ep, batch_id):
        b = await _json(session, "GET", f"{self._url(ep)}/{batch_id}", self.headers(ep))
        if not b.get("results_url"):
            raise BatchApiError(f"batch {batch_id} has no results_url yet")
        out = []
        for x in _jsonl(await _bytes(session, "GET", b["results_url"], self.headers(ep))):
            if not isinstance(x, dict) or not isinstance(x.get("custom_id"), str):
                continue
            r = x.get("result") if isinstance(x.get("result"), dict) else {}
            if r.get("type") == "succeeded":
                out.append(LineResult(x["custom_id"], data=r.get("message")))
            else:
                err = (r.get("error") or {}).get("error") if isinstance(r.get("error"), dict) else None
                msg = err.get("message") if isinstance(err, dict) else None
                out.append(LineResult(x["custom_id"], error=f"{r.get('type', 'unknown')}: {msg or ''}".strip()))
        return out


_GEMINI_ENDED = {"BATCH_STATE_SUCCEEDED", "BATCH_STATE_FAILED", "BATCH_STATE_CANCELLED", "BATCH_STATE_EXPIRED",
                 "JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"}


class GeminiBatchApi(BatchApi):
    name = "gemini"

    @staticmethod
    def _base(ep: EndpointConfig) -> str:
        return _versioned(ep.base_url, ("v1", "v1beta", "v1alpha"), "v1beta")

    @staticmethod
    def request(ep: EndpointConfig, req: BatchRequest) -> dict[str, Any]:
        """One inlined request: the generateContent body the gateway sends, keyed by the custom id."""
        return {"request": req.body(ep), "metadata": {"key": req.custom_id}}

    async def submit(self, session, ep, reqs, key):
        body = orjson.dumps({"batch": {"displayName": f"llmens-{key}", "inputConfig": {"requests": {
            "requests": [self.request(ep, r) for r in reqs]}}}})
        op = await _json(session, "POST", f"{self._base(ep)}/models/{ep.model}:batchGenerateContent",
                         self.headers(ep), data=body)
        return str(op["name"]).removeprefix("batches/")

    async def find(self, session, ep, key):
        page = await _json(session, "GET", f"{self._base(ep)}/batches?pageSize=100", self.headers(ep))
        return next((str(op["name"]).removeprefix("batches/") for op in page.get("operations") or []
                     if isinstance(op, dict) and (op.get("metadata") or {}).get("displayName") == f"llmens-{key}"),
                    None)

    async def _get(self, session, ep, batch_id) -> dict[str, Any]:
        return await _json(session, "GET", f"{self._base(ep)}/batches/{batch_id}", self.headers(ep))

    async def poll(self, session, ep, batch_id):
        op = await self._get(session, ep, batch_id)
        meta = op.get("metadata") or {}
        state = meta.get("state", "")
        stats = meta.get("batchStats") or {}
        total = int(stats.get("requestCount") or 0)
        done = int(stats.get("successfulRequestCount") or 0) + int(stats.get("failedRequestCount") or 0)
        failed = state if state in _GEMINI_ENDED and not state.endswith("SUCCEEDED") else None
        return BatchStatus(state in _GEMINI_ENDED or bool(op.get("done")), done, total, failed)

    async def results(self, session, ep, batch_id):
        op = await self._get(session, ep, batch_id)
        output = (op.get("metadata") or {}).get("output") or (op.get("response") or {})
        items = (output.get("inlinedResponses") or {}).get("inlinedResponses") or []
        out = []
        for x in items:
            key = ((x.get("metadata") or {}).get("key")) if isinstance(x, dict) else None
            if not isinstance(key, str):
                continue
            if x.get("error"):
                err = x["error"]
                out.append(LineResult(key, error=f"error {err.get('code')}: {err.get('message')}"
                                      if isinstance(err, dict) else str(err)))
            else:
                out.append(LineResult(key, data=x.get("response")))
        return out


BATCH_APIS: dict[str, BatchApi] = {a.name: a for a in (OpenAIBatchApi(), AnthropicBatchApi(), GeminiBatchApi())}
