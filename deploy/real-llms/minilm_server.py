#!/usr/bin/env python3
"""all-MiniLM-L6-v2 behind an OpenAI-compatible ``/v1/embeddings`` endpoint, in numpy (no torch).

    python minilm_server.py --model-dir DIR [--port 8413] [--threads 1] [--name minilm]

Why numpy: the sentence-transformers stack needs torch, a download of hundreds of MB for a 22M-parameter
encoder. The BERT forward pass is a few matrix products: token + position + type embeddings, 6 layers of
12-head self-attention and a GELU feed-forward (post-LayerNorm), then mean pooling over real tokens and
L2 normalisation (the model's modules.json: Transformer, Pooling(mean), Normalize). The tokenizer is the
model's own ``tokenizer.json`` (HF ``tokenizers``), truncated at 256 tokens (sentence_bert_config.json).

Runs in the real-llms tools venv (deploy/real-llms/real_llms.py), not in llmens' own environment.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def _erf(x):
    """Vectorised erf (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7): exact GELU without scipy."""
    import numpy as np
    s = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * \
        np.exp(-a * a)
    return s * y


class MiniLM:
    """Sentence embeddings: ``encode(texts) -> (n, 384)`` float32, unit length."""

    def __init__(self, model_dir: Path, max_len: int = 256):
        import numpy as np
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        self.np = np
        cfg = json.loads((model_dir / "config.json").read_text())
        self.heads = cfg["num_attention_heads"]
        self.layers = cfg["num_hidden_layers"]
        self.eps = cfg["layer_norm_eps"]
        self.w = load_file(str(model_dir / "model.safetensors"))
        self.tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tok.enable_truncation(max_len)
        self.tok.enable_padding(pad_id=cfg.get("pad_token_id", 0))

    def _ln(self, x, name):
        np = self.np
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + self.eps) * self.w[name + ".weight"] + self.w[name + ".bias"]

    def _dense(self, x, name):
        return x @ self.w[name + ".weight"].T + self.w[name + ".bias"]

    def encode(self, texts: list[str]) -> tuple:
        """(embeddings (n, d), token count): one padded batch through the encoder."""
        np, w = self.np, self.w
        enc = self.tok.encode_batch(texts)
        ids = np.array([e.ids for e in enc], dtype=np.int64)              # (n, L)
        mask = np.array([e.attention_mask for e in enc], dtype=np.float32)  # (n, L)
        n, seq = ids.shape
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:seq][None]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = self._ln(x, "embeddings.LayerNorm")                             # (n, L, d)
        d = x.shape[-1]
        hd = d // self.heads
        bias = ((1.0 - mask) * -1e9)[:, None, None, :]                     # (n, 1, 1, L)
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def split(t):
                return t.reshape(n, seq, self.heads, hd).transpose(0, 2, 1, 3)  # (n, h, L, hd)

            q = split(self._dense(x, p + "attention.self.query"))
            k = split(self._dense(x, p + "attention.self.key"))
            v = split(self._dense(x, p + "attention.self.value"))
            s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd) + bias           # (n, h, L, L)
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            ctx = (s @ v).transpose(0, 2, 1, 3).reshape(n, seq, d)
            x = self._ln(x + self._dense(ctx, p + "attention.output.dense"), p + "attention.output.LayerNorm")
            h = self._dense(x, p + "intermediate.dense")
            h = 0.5 * h * (1.0 + _erf(h / np.sqrt(2.0)))
            x = self._ln(x + self._dense(h, p + "output.dense"), p + "output.LayerNorm")
        pooled = (x * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)  # (n, d)
        pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return pooled.astype(np.float32), int(mask.sum())


def make_handler(model: MiniLM, name: str, lock: threading.Lock):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet: one line per request would flood the log
            pass

        def _send(self, status: int, obj: dict) -> None:
            body = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "llmens"}]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path.rstrip("/") != "/v1/embeddings":
                self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
                return
            try:
                req = json.loads(raw)
                inp = req["input"]
                texts = [inp] if isinstance(inp, str) else list(inp)
                if not texts or not all(isinstance(t, str) for t in texts):
                    raise ValueError("input must be a string or a non-empty list of strings")
            except (ValueError, KeyError, TypeError) as e:
                self._send(400, {"error": {"message": str(e), "type": "invalid_request_error"}})
                return
            with lock:  # CPU-bound: one batch at a time
                emb, ntok = model.encode(texts)
            self._send(200, {"object": "list", "model": req.get("model") or name,
                             "data": [{"object": "embedding", "index": i, "embedding": e.tolist()}
                                      for i, e in enumerate(emb)],
                             "usage": {"prompt_tokens": ntok, "total_tokens": ntok}})

    return Handler


def main() -> None:
    ap = argparse.ArgumentParser(description="all-MiniLM-L6-v2 /v1/embeddings server (numpy)")
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8413)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default="minilm")
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # before numpy loads its BLAS
    model = MiniLM(args.model_dir)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(model, args.name, threading.Lock()))
    print(f"minilm: serving {args.model_dir} on http://{args.host}:{args.port}/v1", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
